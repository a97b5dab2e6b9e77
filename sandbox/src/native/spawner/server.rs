//! The spawner process itself ([`spawner_main`]): one thread polling the control socket and the
//! pidfds of the inits it cloned.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use perry_policies::config::UidRange;
use perry_policies::Digest;
use perry_profiles::Profile;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use super::wire::{self, Reply, Request};
use crate::native::plan::{ChildFds, Plan};
use crate::native::runner::{clone_here, Child};
use crate::native::{BindMount, LeaseConfig, Limits, ProfileStep, RunSpec};
use crate::pull::VerifiedRootfs;

/// How long the spawner waits for a request's bytes once its socket arrived (the service
/// writes them right after): a stuck writer cannot stall every other run for longer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One init the spawner cloned and has not reaped yet.
struct Running {
    child: Child,
    sock: OwnedFd,
}

/// The spawner's main loop; never returns. Called by the binary's `main` when its first
/// argument is [`SPAWNER_ARG`](super::SPAWNER_ARG), before anything else (no configuration, no
/// keys, no threads). The control socket is stdin.
pub fn spawner_main() -> ! {
    let code = match serve() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("perry-sandbox spawner: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn serve() -> io::Result<()> {
    let control = rustix::io::dup(std::io::stdin().as_fd())?;
    // Our stdin stays a copy of the control socket otherwise; close it so that the service's
    // end sees us gone exactly when this process is.
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    let mut steps: HashMap<String, Arc<ProfileStep>> = HashMap::new();
    let mut running: Vec<Running> = Vec::new();
    loop {
        let mut fds = vec![PollFd::new(&control, PollFlags::IN)];
        for r in &running {
            let pidfd = r
                .child
                .pidfd
                .as_ref()
                .expect("spawned children have a pidfd");
            fds.push(PollFd::new(pidfd, PollFlags::IN));
        }
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        // Reap first: the oldest runs' ends are reported before new ones start.
        for i in (0..running.len()).rev() {
            if ready[i + 1] {
                let mut r = running.swap_remove(i);
                report_exit(&mut r);
            }
        }
        if ready[0] {
            match receive_run_socket(&control)? {
                Some(sock) => {
                    if let Some(r) = take_request(sock, &mut steps) {
                        running.push(r);
                    }
                }
                None => {
                    // The service is gone: nothing may run unsupervised.
                    for r in &running {
                        r.child.kill();
                    }
                    running.clear();
                    return Ok(());
                }
            }
        }
    }
}

/// Receives one run socket from the control socket; `None` at end of stream.
fn receive_run_socket(control: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    loop {
        let mut byte = [0u8; 1];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ctl = RecvAncillaryBuffer::new(&mut space);
        let r = match recvmsg(
            control,
            &mut [io::IoSliceMut::new(&mut byte)],
            &mut ctl,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(r) => r,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut got: Vec<OwnedFd> = Vec::new();
        for m in ctl.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = m {
                got.extend(fds);
            }
        }
        if r.bytes == 0 && got.is_empty() {
            return Ok(None);
        }
        if let Some(sock) = got.pop() {
            return Ok(Some(sock));
        }
    }
}

/// Reads one request from `sock`, clones its init and answers `Spawned` (or `Failed`).
fn take_request(sock: OwnedFd, steps: &mut HashMap<String, Arc<ProfileStep>>) -> Option<Running> {
    let _ = rustix::net::sockopt::set_socket_timeout(
        &sock,
        rustix::net::sockopt::Timeout::Recv,
        Some(REQUEST_TIMEOUT),
    );
    let (req, fds) = match wire::recv_json::<Request>(sock.as_fd()) {
        Ok(r) => r,
        Err(e) => {
            let _ = wire::send_json(sock.as_fd(), &failed(format!("request: {e}")), &[]);
            return None;
        }
    };
    match spawn(&req, fds, steps) {
        Ok((child, born_in_unified)) => {
            let pidfd = child.pidfd.as_ref().expect("spawned children have a pidfd");
            let reply = Reply::Spawned {
                pid: child.pid,
                born_in_unified,
            };
            let sent = wire::send_json(sock.as_fd(), &reply, &[pidfd.as_fd()]);
            if sent.is_err() {
                // The service's run is gone; its init must not wait for a release forever.
                return None; // dropping the child kills and reaps it
            }
            Some(Running { child, sock })
        }
        Err(reason) => {
            let _ = wire::send_json(sock.as_fd(), &failed(reason), &[]);
            None
        }
    }
}

fn failed(reason: String) -> Reply {
    Reply::Failed { reason }
}

/// Rebuilds the run's spec and final step from `req`, then clones init with `fds`. Every
/// received descriptor is closed when this returns: init holds its own copies, and a copy
/// kept here would hide the pipes' end of stream from the service.
fn spawn(
    req: &Request,
    fds: Vec<OwnedFd>,
    steps: &mut HashMap<String, Arc<ProfileStep>>,
) -> Result<(Child, bool), String> {
    let pinned_count = req.mounts.iter().filter(|m| m.pinned).count();
    let want = 6
        + usize::from(req.seccomp)
        + usize::from(req.leaf)
        + usize::from(req.netns)
        + usize::from(req.late)
        + pinned_count;
    if fds.len() != want {
        return Err(format!("{} descriptors, expected {want}", fds.len()));
    }
    let mut fds = fds.into_iter();
    let pipes: Vec<OwnedFd> = fds.by_ref().take(6).collect();
    let seccomp = if req.seccomp { fds.next() } else { None };
    let leaf = if req.leaf { fds.next() } else { None };
    let netns = if req.netns { fds.next() } else { None };
    let bind = if req.late { fds.next() } else { None };
    let step = step_for(req, steps)?;
    let digest = Digest::parse(&req.digest).map_err(|e| format!("digest: {e}"))?;
    let rootfs = VerifiedRootfs::received_by_spawner(digest, req.rootfs.clone());
    let leases = LeaseConfig {
        state_dir: std::path::PathBuf::new(),
        range: UidRange { start: 0, count: 0 },
    };
    let mut spec = RunSpec::new(rootfs, req.argv.clone(), leases);
    spec.env = req.env.clone();
    spec.cwd = req.cwd.clone();
    spec.hostname = req.hostname.clone();
    spec.tmpfs_size = req.tmpfs_size;
    spec.uid = req.uid;
    spec.gid = req.gid;
    spec.loopback = req.loopback;
    spec.limits = Limits {
        memory: req.memory,
        pids: req.pids,
        cpus: req.cpus,
        nofile: req.nofile,
        timeout: Duration::from_millis(req.timeout_ms),
    };
    spec.mounts = req
        .mounts
        .iter()
        .map(|m| BindMount {
            source: m.source.clone(),
            target: m.target.clone(),
            read_only: m.read_only,
            pinned: if m.pinned {
                fds.next().map(Arc::new)
            } else {
                None
            },
        })
        .collect();
    let mut plan = Plan::build(&spec, crate::native::FinalStep::keep_fds(&*step), req.late)
        .map_err(|e| e.to_string())?;
    plan.set_fds(ChildFds {
        sync_r: pipes[0].as_raw_fd(),
        sync_w: -1,
        err_w: pipes[1].as_raw_fd(),
        status_w: pipes[2].as_raw_fd(),
        stdin_r: pipes[3].as_raw_fd(),
        stdout_w: pipes[4].as_raw_fd(),
        stderr_w: pipes[5].as_raw_fd(),
        seccomp_sock: seccomp.as_ref().map_or(-1, |s| s.as_raw_fd()),
        bind_r: bind.as_ref().map_or(-1, |b| b.as_raw_fd()),
    });
    let (mut child, born) = clone_here(
        req.clone_flags,
        netns.as_ref(),
        leaf.as_ref(),
        &plan,
        &*step,
    )
    .map_err(|e| e.to_string())?;
    child.ensure_pidfd().map_err(|e| e.to_string())?;
    Ok((child, born))
}

/// The compiled final step for the request's recipe, built once per recipe.
fn step_for(
    req: &Request,
    steps: &mut HashMap<String, Arc<ProfileStep>>,
) -> Result<Arc<ProfileStep>, String> {
    let key = serde_json::to_string(&req.recipe).map_err(|e| e.to_string())?;
    if let Some(s) = steps.get(&key) {
        return Ok(Arc::clone(s));
    }
    let r = &req.recipe;
    let profile = Profile::for_tier(r.tier, r.overrides.as_ref(), &r.grants)
        .map_err(|e| format!("profile: {e}"))?;
    let step = Arc::new(ProfileStep::new(&profile).map_err(|e| format!("profile: {e}"))?);
    steps.insert(key, Arc::clone(&step));
    Ok(step)
}

/// Reaps a finished init and reports its end on the run's socket.
fn report_exit(r: &mut Running) {
    let reply = match r.child.wait() {
        Ok((status, ru)) => Reply::Exited {
            status,
            utime_us: micros(ru.ru_utime),
            stime_us: micros(ru.ru_stime),
            maxrss_kb: ru.ru_maxrss,
        },
        Err(e) => failed(format!("wait4: {e}")),
    };
    let _ = wire::send_json(r.sock.as_fd(), &reply, &[]);
}

fn micros(t: libc::timeval) -> u64 {
    (t.tv_sec as u64) * 1_000_000 + t.tv_usec as u64
}
