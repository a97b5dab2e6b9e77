//! The workload child: started by init sharing its memory (`CLONE_VM | CLONE_VFORK`) until
//! `execve`; session, rlimits, cwd, identity, the final step, exec.

use std::ptr;

use super::super::final_step::{CapData, CapHeader, FinalStep, StepChannel, CAP_V3};
use super::late::{await_request, Command};
use super::{ck, ck_i, errno, fail, Plan, Step, R};

enum Never {}

/// What init hands the workload child across `clone`.
pub(super) struct WorkloadArgs<'a> {
    pub(super) plan: &'a Plan,
    pub(super) final_step: &'a dyn FinalStep,
}

/// The workload child's entry point on its own stack. Never returns: it execs or exits.
pub(super) extern "C" fn workload_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `WorkloadArgs` init passed to clone, alive while init is suspended.
    let WorkloadArgs { plan, final_step } = unsafe { &*arg.cast::<WorkloadArgs<'_>>() };
    let err_fd = plan.fds.err_w;
    match workload(plan, *final_step) {
        Err(e @ (Step::Exec, errno, _)) => {
            fail(err_fd, e, if errno == libc::ENOENT { 127 } else { 126 })
        }
        Err(e) => fail(err_fd, e, 125),
        Ok(never) => match never {},
    }
}

/// The workload: its own session, rlimits, cwd, identity, the final step, exec.
fn workload(p: &Plan, fs: &dyn FinalStep) -> Result<Never, (Step, i32, u32)> {
    // SAFETY: closing init's status pipe copy; the workload does not use it.
    unsafe { libc::close(p.fds.status_w) };
    // A new session without a controlling terminal: no TIOCSTI into anyone's terminal.
    // SAFETY: setsid in a fresh child.
    ck(Step::NewSession, unsafe { libc::setsid() } as libc::c_long)?;
    // SAFETY: prctl with integer args; init is non-dumpable, the workload starts dumpable again
    // only through execve of a readable binary.
    ck(Step::ParentDeathSignal, unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0)
    } as libc::c_long)?;
    // Dumpable for a moment (init is not, and the flag belongs to the memory we share with
    // it): our own /proc/self files must be ours to write oom_score_adj. Non-dumpable again
    // right after, before anything else runs; execve sets it afresh for the new image.
    ck(
        Step::OomScore,
        // SAFETY: prctl with integer args.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) } as libc::c_long,
    )?;
    let oom = reset_oom_score();
    // SAFETY: prctl with integer args.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    oom?;
    for (i, rl) in p.rlimits.iter().enumerate() {
        let lim = libc::rlimit64 {
            rlim_cur: rl.value,
            rlim_max: rl.value,
        };
        // SAFETY: prlimit64 on ourselves with a stack struct.
        let r = unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                rl.resource,
                &lim as *const libc::rlimit64,
                ptr::null_mut::<libc::rlimit64>(),
            )
        };
        if r < 0 {
            return Err((Step::Rlimit, errno(), i as u32));
        }
    }
    if p.late.is_none() {
        // SAFETY: chdir to a NUL-terminated path owned by the plan.
        ck_i(Step::Cwd, 0, unsafe { libc::chdir(p.cwd.as_ptr()) })?;
    }
    switch_identity(p)?;
    let channel = StepChannel {
        sock: p.fds.seccomp_sock,
    };
    fs.apply(&channel)
        .map_err(|e| (Step::FinalStep, e.errno, 0))?;
    match &p.late {
        None => exec(&Command::planned(p)),
        // A pooled sandbox: confined as it will run, the workload waits for its request's
        // command, then changes to its directory (as the workload's uid, under its Landlock
        // rules) and runs it.
        Some(slot) => {
            let cmd = await_request(p, slot)?;
            // SAFETY: chdir to a NUL-terminated path in the late slot.
            ck_i(Step::Cwd, 0, unsafe { libc::chdir(cmd.cwd) })?;
            exec(&cmd)
        }
    }
}

/// The workload is the OOM killer's first choice, within its memory cgroup (rather than init,
/// whose RSS is a copy of the parent's) and on the host (rather than host services).
fn reset_oom_score() -> R {
    // SAFETY: open/write/close of a static path in the sandbox's own /proc.
    unsafe {
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        ck(Step::OomScore, fd as libc::c_long)?;
        let r = libc::write(fd, b"1000\n".as_ptr().cast(), 5);
        libc::close(fd);
        ck(Step::OomScore, r as libc::c_long)
    }
}

/// Become the workload's uid/gid while keeping the namespace's capabilities in the effective set
/// for the final step (which must drop them): KEEPCAPS across setresuid, then re-raise.
fn switch_identity(p: &Plan) -> R {
    // SAFETY: prctl, raw set*id syscalls and capget/capset on stack structs.
    unsafe {
        ck(
            Step::SwitchIds,
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) as libc::c_long,
        )?;
        ck(
            Step::SwitchIds,
            libc::syscall(libc::SYS_setresgid, p.gid, p.gid, p.gid),
        )?;
        ck(
            Step::SwitchIds,
            libc::syscall(libc::SYS_setresuid, p.uid, p.uid, p.uid),
        )?;
        let mut hdr = CapHeader {
            version: CAP_V3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        ck(
            Step::SwitchIds,
            libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()),
        )?;
        for d in data.iter_mut() {
            d.effective = d.permitted;
        }
        ck(
            Step::SwitchIds,
            libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()),
        )?;
        ck(
            Step::SwitchIds,
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) as libc::c_long,
        )?;
    }
    Ok(())
}

/// `execve` each candidate path in order (PATH lookup), like `execvpe` but without allocating.
/// ENOENT on every candidate reports ENOENT; otherwise the first other error (e.g. EACCES).
fn exec(cmd: &Command) -> Result<Never, (Step, i32, u32)> {
    let mut first_other: Option<(i32, u32)> = None;
    for i in 0..cmd.candidate_count {
        // SAFETY: `candidates` holds `candidate_count` NUL-terminated paths, and argv/envp are
        // null-terminated arrays, all owned by the plan or its late slot.
        unsafe { libc::execve(*cmd.candidates.add(i), cmd.argv, cmd.envp) };
        let e = errno();
        if e != libc::ENOENT && e != libc::ENOTDIR && first_other.is_none() {
            first_other = Some((e, i as u32));
        }
    }
    let (e, i) = first_other.unwrap_or((libc::ENOENT, 0));
    Err((Step::Exec, e, i))
}
