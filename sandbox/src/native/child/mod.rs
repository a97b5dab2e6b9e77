//! The code that runs inside the sandbox between `clone` and `execve`.
//!
//! Two processes run this code:
//! * **init** — the `clone`d child, PID 1 of the new pid namespace. It builds the filesystem,
//!   then starts the workload and reaps until the workload exits, kills and reaps whatever is
//!   left in the namespace, reports the workload's wait status through the status pipe and
//!   exits. The report therefore means "no process of the sandbox but init is left", so the
//!   parent can answer on it while init's own exit (the namespaces' teardown) still runs.
//! * **workload** — started by init with `clone(CLONE_VM | CLONE_VFORK)` on a stack of its own:
//!   it shares init's memory (init is suspended) until it calls `execve`, so no address space
//!   is copied for it. Session, rlimits, identity switch, the [`FinalStep`], exec.
//!
//! init is a copy of a possibly multi-threaded parent made by a raw `clone` syscall, so glibc's
//! view of its threads is stale and malloc locks may be held by threads that do not exist here:
//! no allocation, no locks, no panics, no glibc wrappers that consult thread state (the set*id
//! family broadcasts to "all threads"; we use raw syscalls). Every step is a small function
//! returning the `errno` of the failing syscall; the first failure is written to the error pipe
//! as `(step, errno, index)` and the process exits.

mod late;
mod mounts;
mod workload;

use std::ptr;

use super::final_step::FinalStep;
use super::plan::Plan;
use super::Step;
use mounts::{
    bind_mounts, bind_rootfs_read_only, limit_nested_user_namespaces, mask_proc, mount_dev,
    mount_proc, mount_tmp, pivot_into_rootfs, private_propagation, provide_missing_mount_points,
};
use workload::{workload_entry, WorkloadArgs};

type R = Result<(), (Step, i32, u32)>;

fn errno() -> i32 {
    // SAFETY: __errno_location returns the calling thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

/// Check a libc return value: `-1` (or any negative) means failure with `errno`.
fn ck(step: Step, r: libc::c_long) -> R {
    if r < 0 {
        Err((step, errno(), 0))
    } else {
        Ok(())
    }
}

fn ck_i(step: Step, idx: usize, r: libc::c_int) -> R {
    if r < 0 {
        Err((step, errno(), idx as u32))
    } else {
        Ok(())
    }
}

/// Write the failure record and leave. Uses only `write` and `_exit`.
fn fail(fd: i32, (step, e, idx): (Step, i32, u32), code: i32) -> ! {
    let mut rec = [0u8; 12];
    rec[0..4].copy_from_slice(&(step as u32).to_ne_bytes());
    rec[4..8].copy_from_slice(&e.to_ne_bytes());
    rec[8..12].copy_from_slice(&idx.to_ne_bytes());
    // SAFETY: writing a stack buffer to a pipe fd, then terminating without unwinding.
    unsafe {
        libc::write(fd, rec.as_ptr().cast(), rec.len());
        libc::_exit(code)
    }
}

/// Entry point of the cloned child (init). Never returns.
pub(crate) fn init_main(plan: &Plan, final_step: &dyn FinalStep) -> ! {
    let err_fd = plan.fds.err_w;
    match init_setup(plan) {
        Ok(()) => {}
        Err(e) => fail(err_fd, e, 1),
    }
    // Start the workload sharing init's memory until it calls execve (CLONE_VM | CLONE_VFORK,
    // as posix_spawn does): no copy of the address space to make, fault in and tear down.
    // init is suspended meanwhile, so nothing else touches that memory (errno included).
    let args = WorkloadArgs { plan, final_step };
    // SAFETY: glibc's clone runs `workload_entry` on the plan's dedicated stack (guard page
    // below it) with a pointer to `args`, which outlives the child's use of it: with
    // CLONE_VFORK this call returns only once the child has called execve or _exit.
    let pid = unsafe {
        libc::clone(
            workload_entry,
            plan.workload_stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&args as *const WorkloadArgs<'_>).cast_mut().cast(),
        )
    };
    if pid < 0 {
        fail(err_fd, (Step::ForkWorkload, errno(), 0), 1);
    }
    // The workload made the shared memory dumpable for a moment (see `workload`); init stays
    // non-dumpable whatever happened there.
    // SAFETY: prctl with integer args.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if plan.fds.seccomp_sock >= 0 {
        // SAFETY: closing init's copy; the parent and the workload hold their own.
        unsafe { libc::close(plan.fds.seccomp_sock) };
    }
    if plan.fds.bind_r >= 0 {
        // SAFETY: closing init's copy of the bind socket; the workload read its own.
        unsafe { libc::close(plan.fds.bind_r) };
    }
    // init: drop everything the workload's output depends on, then reap.
    // SAFETY: closing our own copies of fds; the workload has its own.
    unsafe {
        libc::close(err_fd);
        libc::close(0);
        libc::close(1);
        libc::close(2);
    }
    let workload_pid = pid as libc::pid_t;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: wait4 on any child with a valid status pointer.
        let r = unsafe { libc::wait4(-1, &mut status, libc::__WALL, ptr::null_mut()) };
        if r == workload_pid {
            end_the_rest();
            let report = status_report(status);
            // SAFETY: write the report (one write, under PIPE_BUF: atomic) to the status pipe,
            // then exit: init is the only process of the sandbox left.
            unsafe {
                libc::write(plan.fds.status_w, report.as_ptr().cast(), report.len());
                libc::_exit(0)
            }
        }
        if r < 0 && errno() != libc::EINTR {
            // SAFETY: terminate.
            unsafe { libc::_exit(1) }
        }
    }
}

/// Kills and reaps every process left in init's pid namespace (what the workload started and
/// left behind), so that the status report is written only once init is the last one: the
/// parent answers on the report. `kill(-1)` from a namespace's init reaches every process of
/// the namespace but itself, and a fork racing with it fails (the forking parent has SIGKILL
/// pending), so the reaping loop ends with ECHILD. Only as PID 1: `kill(-1)` anywhere else
/// would reach far more than the sandbox.
fn end_the_rest() {
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        return;
    }
    // SAFETY: kill with integer arguments; as PID 1 of the sandbox's pid namespace, -1 means
    // every other process of that namespace (and of namespaces below it).
    unsafe { libc::kill(-1, libc::SIGKILL) };
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: wait4 on any child with a valid status pointer.
        let r = unsafe { libc::wait4(-1, &mut status, libc::__WALL, ptr::null_mut()) };
        if r < 0 && errno() != libc::EINTR {
            // ECHILD: nothing is left to reap.
            return;
        }
    }
}

/// Bytes of init's status report: the workload's wait status (`i32`), then init's resource use
/// with everything it reaped — user and system CPU (µs, `u64`) and peak RSS (KiB, `i64`) —
/// what `wait4` on init reports, so that the parent need not wait for init's reaper to learn it.
pub(crate) const STATUS_REPORT: usize = 4 + 8 + 8 + 8;

fn status_report(status: libc::c_int) -> [u8; STATUS_REPORT] {
    // SAFETY: all-zero rusage structs are valid out-parameters for getrusage.
    let (mut me, mut reaped): (libc::rusage, libc::rusage) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: getrusage fills the stack structs.
    unsafe {
        libc::getrusage(libc::RUSAGE_SELF, &mut me);
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut reaped);
    }
    let us = |t: libc::timeval| (t.tv_sec as u64) * 1_000_000 + t.tv_usec as u64;
    let mut out = [0u8; STATUS_REPORT];
    out[0..4].copy_from_slice(&status.to_ne_bytes());
    out[4..12].copy_from_slice(&(us(me.ru_utime) + us(reaped.ru_utime)).to_ne_bytes());
    out[12..20].copy_from_slice(&(us(me.ru_stime) + us(reaped.ru_stime)).to_ne_bytes());
    let maxrss: i64 = me.ru_maxrss.max(reaped.ru_maxrss);
    out[20..28].copy_from_slice(&maxrss.to_ne_bytes());
    out
}

/// Init's setup: identity, namespaces' contents, filesystem, fds. Each line is one named step.
fn init_setup(p: &Plan) -> R {
    close_inherited_fds(p)?;
    die_with_parent()?;
    wait_for_parent(p)?;
    become_namespace_root()?;
    die_with_parent_again(p)?;
    new_cgroup_namespace()?;
    set_hostname(p)?;
    private_propagation()?;
    bind_rootfs_read_only(p)?;
    provide_missing_mount_points(p)?;
    mount_proc(p)?;
    limit_nested_user_namespaces(p)?;
    mask_proc(p)?;
    mount_dev(p)?;
    mount_tmp(p)?;
    bind_mounts(p)?;
    pivot_into_rootfs(p)?;
    if p.loopback {
        loopback_up()?;
    }
    setup_stdio(p)?;
    close_other_fds(p)?;
    make_non_dumpable()?;
    Ok(())
}

/// If the supervising thread dies, the sandbox must not outlive it unsupervised.
fn die_with_parent() -> R {
    // SAFETY: prctl with integer args.
    ck(Step::ParentDeathSignal, unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0)
    } as libc::c_long)
}

/// The id switch of [`become_namespace_root`] clears the parent-death signal (the kernel resets
/// it on every change of effective ids), so arm it again — and since the parent may have died
/// in between, look at the sync pipe: the parent holds its end for the whole run, so a hang-up
/// means it is gone and nothing may run.
fn die_with_parent_again(p: &Plan) -> R {
    die_with_parent()?;
    let mut pfd = libc::pollfd {
        fd: p.fds.sync_r,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll one stack pollfd without waiting.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    if n < 0 {
        return Err((Step::ParentDeathSignal, errno(), 1));
    }
    if pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
        return Err((Step::ParentDeathSignal, libc::ESRCH, 1));
    }
    // SAFETY: close our copy of the sync pipe's read end; it has served its purpose.
    unsafe { libc::close(p.fds.sync_r) };
    Ok(())
}

/// Block until the parent has written our uid/gid maps and put us in our cgroups; EOF means
/// the parent gave up (or died), and we must not run anything.
fn wait_for_parent(p: &Plan) -> R {
    // SAFETY: close the parent's end we inherited, so EOF (and later hang-up) means the parent
    // itself is gone.
    unsafe { libc::close(p.fds.sync_w) };
    let mut b = [0u8; 1];
    loop {
        // SAFETY: read one byte into a stack buffer.
        let n = unsafe { libc::read(p.fds.sync_r, b.as_mut_ptr().cast(), 1) };
        if n == 1 {
            break;
        }
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        return Err((
            Step::WaitForParent,
            if n == 0 { libc::EPIPE } else { errno() },
            0,
        ));
    }
    Ok(())
}

/// Become uid/gid 0 of the new user namespace (host: the lease's first id) and drop the host
/// root's supplementary groups, which would otherwise keep granting host group permissions.
fn become_namespace_root() -> R {
    // SAFETY: raw set*id syscalls (the glibc wrappers would try to signal the parent's threads).
    unsafe {
        ck(Step::SetIds, libc::syscall(libc::SYS_setresgid, 0, 0, 0))?;
        ck(Step::SetIds, libc::syscall(libc::SYS_setresuid, 0, 0, 0))?;
        ck(
            Step::SetGroups,
            libc::syscall(libc::SYS_setgroups, 0, ptr::null::<libc::gid_t>()),
        )?;
    }
    Ok(())
}

/// A cgroup namespace rooted at the run's cgroup (we were moved there before `wait_for_parent`
/// returned), so the sandbox sees `/` as its cgroup and learns nothing about the host's tree.
fn new_cgroup_namespace() -> R {
    // SAFETY: unshare in a single-threaded process.
    ck(
        Step::CgroupNamespace,
        unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } as libc::c_long,
    )
}

fn set_hostname(p: &Plan) -> R {
    // SAFETY: pointer and length of the plan's hostname bytes (new UTS namespace).
    ck(
        Step::Hostname,
        unsafe { libc::sethostname(p.hostname.as_ptr().cast(), p.hostname.len()) } as libc::c_long,
    )
}

/// Bring `lo` up in the (otherwise empty) network namespace, only when granted.
fn loopback_up() -> R {
    // SAFETY: a datagram socket and SIOCSIFFLAGS on a zeroed, stack-allocated ifreq.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        ck_i(Step::LoopbackUp, 0, s)?;
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        let r = libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr);
        libc::close(s);
        ck_i(Step::LoopbackUp, 1, r)
    }
}

fn setup_stdio(p: &Plan) -> R {
    for (i, (from, to)) in [(p.fds.stdin_r, 0), (p.fds.stdout_w, 1), (p.fds.stderr_w, 2)]
        .into_iter()
        .enumerate()
    {
        // SAFETY: dup2 of fds we own; clears CLOEXEC on the target.
        ck_i(Step::Stdio, i, unsafe { libc::dup2(from, to) })?;
    }
    Ok(())
}

/// Close every fd but stdio, the two report pipes and the final step's fds: nothing the
/// (multi-threaded) parent had open may reach the sandbox.
fn close_other_fds(p: &Plan) -> R {
    close_all_but(&p.keep_fds)
}

/// First of all, before even the parent-death signal: close what init inherited but does not
/// need — a spawner's control socket and the sockets and pipes of other runs. A copy kept here
/// would hold another run's socket open after the spawner died (its service would never see
/// the end of stream), and an init whose parent died before [`die_with_parent`] would keep it
/// until its own release fails.
fn close_inherited_fds(p: &Plan) -> R {
    close_all_but(&p.inherited_fds)
}

/// Closes every descriptor from 3 up except `keep` (sorted).
fn close_all_but(keep: &[i32]) -> R {
    let mut from: u32 = 3;
    for &k in keep {
        let k = k as u32;
        if k > from {
            close_range(from, k - 1)?;
        }
        from = from.max(k + 1);
    }
    close_range(from, u32::MAX)
}

fn close_range(first: u32, last: u32) -> R {
    // SAFETY: close_range on our own fd table.
    ck(Step::CloseFds, unsafe {
        libc::syscall(libc::SYS_close_range, first, last, 0)
    })
}

/// Not dumpable: the workload cannot ptrace init or read its `/proc/1/{mem,fd,environ}`.
fn make_non_dumpable() -> R {
    // SAFETY: prctl with integer args.
    ck(
        Step::NonDumpable,
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } as libc::c_long,
    )
}
