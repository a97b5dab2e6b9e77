//! The spawner's wire format: frames of a 4-byte little-endian length and a JSON body, with
//! file descriptors passed beside them (`SCM_RIGHTS`) on a Unix stream socket.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;

use perry_policies::{Tier, TierOverride};
use perry_profiles::Grants;
use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

/// Largest frame either side accepts (a request carries argv and env, bounded far lower by
/// the service's own request limits).
const MAX_FRAME: usize = 16 << 20;
/// Most descriptors one frame may carry: the run's pipes, the seccomp handoff, the cgroup
/// leaf, a network namespace and the pinned bind sources.
pub(crate) const MAX_FDS: usize = 64;

/// How the spawner rebuilds the run's final step: the same inputs the service compiled its
/// own profile from, so both sides hold the same confinement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecipe {
    /// The tier.
    pub tier: Tier,
    /// The site's `[tiers.<tier>]` override.
    pub overrides: Option<TierOverride>,
    /// The run's grants (mount targets, network).
    pub grants: Grants,
}

/// One bind mount of a request; a pinned one's `O_PATH` descriptor travels with the frame.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
    pub pinned: bool,
}

/// Service -> spawner: clone one sandbox init. The descriptors, in order: sync_r, err_w,
/// status_w, stdin_r, stdout_w, stderr_w, then the seccomp handoff, the cgroup leaf and the
/// network namespace and the bind socket (`late`) when their flags say so, then one per pinned
/// mount.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub digest: String,
    pub rootfs: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub hostname: String,
    pub mounts: Vec<WireMount>,
    pub tmpfs_size: u64,
    pub uid: u32,
    pub gid: u32,
    pub memory: u64,
    pub pids: u32,
    pub cpus: f64,
    pub nofile: u64,
    pub timeout_ms: u64,
    pub loopback: bool,
    pub recipe: StepRecipe,
    pub clone_flags: i32,
    pub seccomp: bool,
    pub leaf: bool,
    pub netns: bool,
    /// A pooled sandbox: `argv`, `env` and `cwd` are placeholders; the workload reads its
    /// command from the bind socket once confined.
    #[serde(default)]
    pub late: bool,
}

/// Spawner -> service, on the run's socket.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// Init is cloned and waits for its release; its pidfd travels with the frame.
    Spawned { pid: i32, born_in_unified: bool },
    /// Nothing was cloned.
    Failed { reason: String },
    /// Init was reaped (`wait4`): its status and resource use.
    Exited {
        status: i32,
        utime_us: u64,
        stime_us: u64,
        maxrss_kb: i64,
    },
}

/// One received frame.
pub(crate) struct Frame {
    pub body: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// Sends `body` as one frame with `fds` attached to its first byte.
pub(crate) fn send(sock: BorrowedFd<'_>, body: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| (*l as usize) <= MAX_FRAME)
        .ok_or_else(|| io::Error::other("frame too large"))?;
    let mut frame = len.to_le_bytes().to_vec();
    frame.extend_from_slice(body);
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors for one frame"));
    }
    let mut sent = 0;
    while sent < frame.len() {
        let iov = [io::IoSlice::new(&frame[sent..])];
        let mut none = SendAncillaryBuffer::default();
        let ctl = if sent == 0 { &mut control } else { &mut none };
        match sendmsg(sock, &iov, ctl, SendFlags::NOSIGNAL) {
            Ok(n) => sent += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Serializes `msg` and sends it as one frame.
pub(crate) fn send_json<T: Serialize>(
    sock: BorrowedFd<'_>,
    msg: &T,
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    send(sock, &body, fds)
}

/// Receives one frame; `None` on a clean end of stream before it.
pub(crate) fn recv(sock: BorrowedFd<'_>) -> io::Result<Option<Frame>> {
    let mut fds = Vec::new();
    let mut head = [0u8; 4];
    if !read_exact(sock, &mut head, &mut fds)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes(head) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!("frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    if !read_exact(sock, &mut body, &mut fds)? && len > 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(Frame { body, fds }))
}

/// Receives one frame and parses it as `T`; end of stream is an error here.
pub(crate) fn recv_json<T: for<'de> Deserialize<'de>>(
    sock: BorrowedFd<'_>,
) -> io::Result<(T, Vec<OwnedFd>)> {
    let frame = recv(sock)?.ok_or(io::ErrorKind::UnexpectedEof)?;
    let msg = serde_json::from_slice(&frame.body).map_err(io::Error::other)?;
    Ok((msg, frame.fds))
}

/// Fills `buf`, collecting descriptors; `false` on end of stream before the first byte.
fn read_exact(sock: BorrowedFd<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut buf[got..])];
        let r = match recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(r) => r,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = m {
                fds.extend(received);
            }
        }
        if r.flags.contains(ReturnFlags::CTRUNC) {
            return Err(io::Error::other("descriptors truncated"));
        }
        if r.bytes == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += r.bytes;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    use std::os::fd::AsFd;

    fn stream_pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_frame_and_its_descriptors_arrive_together() {
        let (a, b) = stream_pair();
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let body = vec![7u8; 300_000];
        let sender = std::thread::spawn(move || {
            send(a.as_fd(), &body, &[file.as_fd()]).unwrap();
            send(a.as_fd(), b"second", &[]).unwrap();
        });
        let f = recv(b.as_fd()).unwrap().unwrap();
        assert_eq!(f.body.len(), 300_000);
        assert_eq!(f.fds.len(), 1);
        let f2 = recv(b.as_fd()).unwrap().unwrap();
        assert_eq!(f2.body, b"second");
        assert!(f2.fds.is_empty());
        sender.join().unwrap();
        assert!(
            recv(b.as_fd()).unwrap().is_none(),
            "end of stream after the last frame"
        );
    }

    #[test]
    fn an_oversized_length_is_refused_not_allocated() {
        let (a, b) = stream_pair();
        rustix::io::write(&a, &u32::MAX.to_le_bytes()).unwrap();
        assert!(recv(b.as_fd()).is_err());
    }
}
