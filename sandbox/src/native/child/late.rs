//! A pooled sandbox's last step before `execve`: the workload, confined as it will run, waits
//! for the request's command on the bind socket and lays it out in the plan's [`LateSlot`]
//! without allocating.

use std::ptr;

use super::super::plan::{LateSlot, Plan, PARKED};
use super::{errno, Step, R};

/// The command the workload runs: the plan's own, or the one a pooled init was bound to.
pub(super) struct Command {
    pub(super) cwd: *const libc::c_char,
    pub(super) argv: *const *const libc::c_char,
    pub(super) envp: *const *const libc::c_char,
    pub(super) candidates: *const *const libc::c_char,
    pub(super) candidate_count: usize,
}

impl Command {
    /// The command built into the plan before `clone`.
    pub(super) fn planned(p: &Plan) -> Self {
        Command {
            cwd: p.cwd.as_ptr(),
            argv: p.argv.as_ptr(),
            envp: p.envp.as_ptr(),
            candidates: p.exec_candidates.as_ptr(),
            candidate_count: p.exec_candidates.len(),
        }
    }
}

fn fail(index: u32, e: i32) -> (Step, i32, u32) {
    (Step::AwaitRequest, e, index)
}

/// Reads exactly `len` bytes into `buf`; end of stream first is `EPIPE`.
fn read_full(fd: i32, buf: *mut u8, len: usize) -> R {
    let mut done = 0;
    while done < len {
        // SAFETY: reading into the caller's buffer, within its `len` bytes.
        let n = unsafe { libc::read(fd, buf.add(done).cast(), len - done) };
        if n > 0 {
            done += n as usize;
        } else if n == 0 {
            return Err(fail(0, libc::EPIPE));
        } else if errno() != libc::EINTR {
            return Err(fail(0, errno()));
        }
    }
    Ok(())
}

/// Says it is parked, then blocks until the service binds a request (see [`LateSlot`] for the
/// frame), checks the frame against the slot's bounds and lays out the pointer arrays. A
/// malformed frame is `EINVAL`; nothing runs.
pub(super) fn await_request(p: &Plan, slot: &LateSlot) -> Result<Command, (Step, i32, u32)> {
    let fd = p.fds.bind_r;
    // The service waits for this byte only to move mounts in; if it cannot be written the
    // service falls back to a cold run, so a failure here changes nothing else.
    // SAFETY: writing one byte from a static to our end of the bind socket.
    unsafe { libc::write(fd, [PARKED].as_ptr().cast(), 1) };
    let mut header = [0u8; 16];
    read_full(fd, header.as_mut_ptr(), header.len())?;
    let word = |i: usize| {
        u32::from_le_bytes([
            header[4 * i],
            header[4 * i + 1],
            header[4 * i + 2],
            header[4 * i + 3],
        ]) as usize
    };
    let (bytes, argc, envc, candc) = (word(0), word(1), word(2), word(3));
    let strings = 1 + argc + envc + candc;
    if bytes > LateSlot::MAX_BYTES || strings > LateSlot::MAX_STRINGS || argc == 0 || candc == 0 {
        return Err(fail(1, libc::EINVAL));
    }
    let data = slot.bytes();
    read_full(fd, data, bytes)?;
    // SAFETY: closing our copy of the bind socket; the request is read.
    unsafe { libc::close(fd) };
    // Pointer area: argv (argc) null, envp (envc) null, candidates (candc).
    let ptrs = slot.ptrs();
    let slot_of = |k: usize| -> usize {
        match k {
            0 => usize::MAX, // the working directory has no slot
            k if k <= argc => k - 1,
            k if k <= argc + envc => k,
            k => k + 1,
        }
    };
    let mut cwd = ptr::null();
    let mut pos = 0usize;
    for k in 0..strings {
        // SAFETY: `pos < bytes` is checked before each read; the string area holds `bytes`.
        let start = unsafe { data.add(pos) };
        loop {
            if pos >= bytes {
                return Err(fail(2, libc::EINVAL));
            }
            // SAFETY: `pos < bytes`, inside what was read.
            let b = unsafe { *data.add(pos) };
            pos += 1;
            if b == 0 {
                break;
            }
        }
        let s = start.cast::<libc::c_char>().cast_const();
        match slot_of(k) {
            usize::MAX => cwd = s,
            // SAFETY: every index is below argc + envc + candc + 2 <= MAX_STRINGS + 2, the
            // pointer area's size.
            i => unsafe { *ptrs.add(i) = s },
        }
    }
    if pos != bytes {
        return Err(fail(3, libc::EINVAL));
    }
    // SAFETY: the two terminating nulls, inside the pointer area as above.
    unsafe {
        *ptrs.add(argc) = ptr::null();
        *ptrs.add(argc + 1 + envc) = ptr::null();
    }
    Ok(Command {
        cwd,
        argv: ptrs.cast_const(),
        // SAFETY: offsets inside the pointer area as above.
        envp: unsafe { ptrs.add(argc + 1) }.cast_const(),
        // SAFETY: as above.
        candidates: unsafe { ptrs.add(argc + envc + 2) }.cast_const(),
        candidate_count: candc,
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::native::fds::pipe;
    use crate::native::plan::{late_frame, ChildFds};
    use crate::native::{LeaseConfig, RunSpec};
    use crate::pull::VerifiedRootfs;
    use perry_policies::config::UidRange;

    fn spec(dir: &std::path::Path, argv: &[&str]) -> RunSpec {
        RunSpec::new(
            VerifiedRootfs::unverified_for_tests(dir),
            argv.iter().map(|a| a.to_string()).collect(),
            LeaseConfig {
                state_dir: dir.to_path_buf(),
                range: UidRange {
                    start: 100_000,
                    count: 2,
                },
            },
        )
    }

    /// A pooled plan whose bind pipe's write end is returned; `frame` is written to it first
    /// and the write end closed, so a short frame reads as end of stream.
    fn bind(frame: &[u8]) -> (tempfile::TempDir, Plan) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["proc", "dev", "tmp"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let mut plan = Plan::build(&spec(dir.path(), &["/placeholder"]), &[], true).unwrap();
        let (r, w) = pipe().unwrap();
        plan.set_fds(ChildFds {
            bind_r: r.into_raw_fd(), // await_request closes it
            ..ChildFds::default()
        });
        std::fs::File::from(w).write_all(frame).unwrap();
        (dir, plan)
    }

    fn string(p: *const libc::c_char) -> String {
        // SAFETY: every pointer under test points at a NUL-terminated string in the slot.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    fn strings(mut p: *const *const libc::c_char) -> Vec<String> {
        let mut out = Vec::new();
        // SAFETY: a null-terminated array laid out by await_request.
        unsafe {
            while !(*p).is_null() {
                out.push(string(*p));
                p = p.add(1);
            }
        }
        out
    }

    #[test]
    fn the_requests_own_command_environment_and_directory_are_what_the_workload_gets() {
        let dir = tempfile::tempdir().unwrap();
        let mut request = spec(dir.path(), &["echo", "two words", ""]);
        request.env = vec![("MARK".into(), "request-b".into())];
        request.cwd = "/work".into();
        let (_d, plan) = bind(&late_frame(&request).unwrap());
        let cmd = await_request(&plan, plan.late.as_ref().unwrap()).unwrap();
        assert_eq!(string(cmd.cwd), "/work");
        assert_eq!(strings(cmd.argv), ["echo", "two words", ""]);
        let env = strings(cmd.envp);
        assert_eq!(env[0], "MARK=request-b");
        assert!(env[1].starts_with("PATH="), "{env:?}");
        assert_eq!(env.len(), 2);
        let dirs = crate::native::DEFAULT_PATH.split(':').count();
        assert_eq!(cmd.candidate_count, dirs);
        // SAFETY: candidate_count pointers follow.
        let first = string(unsafe { *cmd.candidates });
        assert_eq!(first, "/usr/local/sbin/echo");
    }

    #[test]
    fn a_frame_cut_short_is_end_of_stream_and_nothing_runs() {
        let dir = tempfile::tempdir().unwrap();
        let frame = late_frame(&spec(dir.path(), &["/bin/true"])).unwrap();
        let (_d, plan) = bind(&frame[..frame.len() - 1]);
        let e = await_request(&plan, plan.late.as_ref().unwrap())
            .err()
            .unwrap();
        assert_eq!((e.0, e.1), (Step::AwaitRequest, libc::EPIPE));
    }

    #[test]
    fn counts_that_do_not_match_the_strings_or_exceed_the_slot_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = late_frame(&spec(dir.path(), &["/bin/true"])).unwrap();
        // One argument more than the strings hold.
        let mut more = good.clone();
        more[4] += 1;
        // One string fewer than the bytes hold: argv shrinks to nothing.
        let mut none = good.clone();
        none[4] = 0;
        // More bytes than the slot takes.
        let mut huge = good.clone();
        huge[0..4].copy_from_slice(&((LateSlot::MAX_BYTES + 1) as u32).to_le_bytes());
        for (what, frame) in [("argc+1", more), ("argc=0", none), ("too big", huge)] {
            let (_d, plan) = bind(&frame);
            let e = await_request(&plan, plan.late.as_ref().unwrap()).err();
            assert!(
                matches!(e, Some((Step::AwaitRequest, libc::EINVAL, _))),
                "{what}: {e:?}"
            );
            // SAFETY: the refused frame left the read end open; close it.
            unsafe { libc::close(plan.fds.bind_r) };
        }
    }

    #[test]
    fn a_command_too_large_for_the_slot_is_not_framed() {
        let dir = tempfile::tempdir().unwrap();
        let big = "x".repeat(LateSlot::MAX_BYTES);
        let e = late_frame(&spec(dir.path(), &["echo", &big]))
            .err()
            .unwrap();
        assert!(e.to_string().contains("pooled"), "{e}");
        let many: Vec<String> = (0..LateSlot::MAX_STRINGS).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = std::iter::once("echo")
            .chain(many.iter().map(String::as_str))
            .collect();
        assert!(late_frame(&spec(dir.path(), &refs)).is_err());
    }
}
