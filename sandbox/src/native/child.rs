//! The code that runs inside the sandbox between `clone` and `execve`.
//!
//! Two processes run this code:
//! * **init** — the `clone`d child, PID 1 of the new pid namespace. It builds the filesystem,
//!   then starts the workload and reaps until the workload exits, reports the workload's wait
//!   status through the status pipe and exits, which makes the kernel kill whatever is left in
//!   the namespace.
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

use std::ffi::CStr;
use std::ptr;

use super::final_step::{CapData, CapHeader, FinalStep, StepChannel, CAP_V3};
use super::plan::Plan;
use super::Step;

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

fn mount(
    src: *const libc::c_char,
    dst: *const libc::c_char,
    fstype: *const libc::c_char,
    flags: libc::c_ulong,
    data: *const libc::c_char,
) -> libc::c_int {
    // SAFETY: every pointer is either null or a NUL-terminated string owned by the plan.
    unsafe { libc::mount(src, dst, fstype, flags, data.cast()) }
}

/// Flags of the mount at `path` that a bind remount must repeat: the kernel refuses to clear
/// nosuid/nodev/noexec/rdonly ("locked" flags) on a mount inherited from a more privileged
/// mount namespace, so a remount has to carry them over.
fn locked_flags(path: &CStr) -> Result<libc::c_ulong, i32> {
    let mut st = KStatfs::default();
    // SAFETY: raw statfs(2) (glibc's statvfs may read /proc/mounts, i.e. allocate) into a
    // struct with the kernel's 64-bit `struct statfs` layout.
    if unsafe { libc::syscall(libc::SYS_statfs, path.as_ptr(), &mut st as *mut KStatfs) } != 0 {
        return Err(errno());
    }
    let f = st.f_flags as libc::c_ulong;
    let mut out = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st_flag != 0 {
            out |= ms_flag;
        }
    }
    Ok(out)
}

/// The kernel's `struct statfs` on 64-bit architectures (asm-generic and x86_64 agree); the
/// `libc` crate hides `f_flags`, which carries the per-mount ST_* flags.
#[cfg(target_pointer_width = "64")]
#[repr(C)]
#[derive(Default)]
struct KStatfs {
    f_type: i64,
    f_bsize: i64,
    f_blocks: u64,
    f_bfree: u64,
    f_bavail: u64,
    f_files: u64,
    f_ffree: u64,
    f_fsid: [i32; 2],
    f_namelen: i64,
    f_frsize: i64,
    f_flags: i64,
    f_spare: [i64; 4],
}

/// Bind `path` onto itself's mount read-only with `extra` flags, repeating locked flags.
fn remount_bind(step: Step, idx: usize, path: &CStr, extra: libc::c_ulong) -> R {
    let locked = locked_flags(path).map_err(|e| (step, e, idx as u32))?;
    ck_i(
        step,
        idx,
        mount(
            ptr::null(),
            path.as_ptr(),
            ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | extra | locked,
            ptr::null(),
        ),
    )
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
            let b = status.to_ne_bytes();
            // SAFETY: write 4 stack bytes to the status pipe, then exit; the kernel kills the rest
            // of the pid namespace when its init exits.
            unsafe {
                libc::write(plan.fds.status_w, b.as_ptr().cast(), 4);
                libc::_exit(0)
            }
        }
        if r < 0 && errno() != libc::EINTR {
            // SAFETY: terminate.
            unsafe { libc::_exit(1) }
        }
    }
}

/// Init's setup: identity, namespaces' contents, filesystem, fds. Each line is one named step.
fn init_setup(p: &Plan) -> R {
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

/// Nothing we mount may propagate back to the host, and `pivot_root` refuses shared mounts.
fn private_propagation() -> R {
    ck_i(
        Step::PrivatePropagation,
        0,
        mount(
            ptr::null(),
            c"/".as_ptr(),
            ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            ptr::null(),
        ),
    )
}

/// Bind the rootfs onto itself (it must be a mount point for `pivot_root`), non-recursively so
/// no host mount below it comes along, then make it read-only, nosuid, nodev.
fn bind_rootfs_read_only(p: &Plan) -> R {
    ck_i(
        Step::BindRootfs,
        0,
        mount(
            p.rootfs.as_ptr(),
            p.rootfs.as_ptr(),
            ptr::null(),
            libc::MS_BIND,
            ptr::null(),
        ),
    )?;
    remount_bind(
        Step::RemountRootfs,
        0,
        &p.rootfs,
        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
    )
}

/// Mount points the image lacks, without writing to the rootfs: a tmpfs layer holding their
/// directories under a read-only overlay of the whole rootfs (see `plan::MountPoints`).
fn provide_missing_mount_points(p: &Plan) -> R {
    let Some(m) = &p.mount_points else {
        return Ok(());
    };
    ck_i(
        Step::MountPointLayer,
        0,
        mount(
            p.tmpfs.as_ptr(),
            p.tmp_dir.as_ptr(),
            p.tmpfs.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            m.layer_data.as_ptr(),
        ),
    )?;
    // The layer's paths and the overlay's options are relative to the rootfs.
    // SAFETY: chdir to a plan-owned path.
    ck_i(Step::MountPointLayer, 1, unsafe {
        libc::chdir(p.rootfs.as_ptr())
    })?;
    for (i, (dir, mode)) in m.dirs.iter().enumerate() {
        // SAFETY: mkdir and chmod (the umask must not decide the mode) of plan-owned paths
        // inside the layer, which holds nothing but these directories.
        unsafe {
            ck_i(Step::MountPointDir, i, libc::mkdir(dir.as_ptr(), 0o700))?;
            ck_i(Step::MountPointDir, i, libc::chmod(dir.as_ptr(), *mode))?;
        }
    }
    ck_i(
        Step::MountPointOverlay,
        0,
        mount(
            m.overlay.as_ptr(),
            p.rootfs.as_ptr(),
            m.overlay.as_ptr(),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            m.overlay_data.as_ptr(),
        ),
    )
}

/// A fresh procfs; it shows only this pid namespace because we are its init.
fn mount_proc(p: &Plan) -> R {
    ck_i(
        Step::MountProc,
        0,
        mount(
            p.proc_fs.as_ptr(),
            p.proc_dir.as_ptr(),
            p.proc_fs.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            ptr::null(),
        ),
    )
}

/// `user.max_user_namespaces = 0` in our user namespace: the workload cannot create nested
/// user namespaces (and with them fresh capabilities) even before seccomp filters `clone`.
fn limit_nested_user_namespaces(p: &Plan) -> R {
    // SAFETY: open/write/close of a proc file with plan-owned path and a static buffer.
    unsafe {
        let fd = libc::open(p.max_userns.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        ck(Step::LimitUserNamespaces, fd as libc::c_long)?;
        let r = libc::write(fd, b"0\n".as_ptr().cast(), 2);
        libc::close(fd);
        ck(Step::LimitUserNamespaces, r as libc::c_long)
    }
}

/// Hide kernel-information files behind `/dev/null`, directories behind an empty read-only
/// tmpfs, and make `/proc/sys` and friends read-only. Entries this kernel lacks are skipped.
fn mask_proc(p: &Plan) -> R {
    for (i, f) in p.proc_masked_files.iter().enumerate() {
        let r = mount(
            p.host_dev_null.as_ptr(),
            f.as_ptr(),
            ptr::null(),
            libc::MS_BIND,
            ptr::null(),
        );
        if r < 0 && errno() != libc::ENOENT {
            return Err((Step::MaskProc, errno(), i as u32));
        }
    }
    for (i, d) in p.proc_masked_dirs.iter().enumerate() {
        let r = mount(
            p.tmpfs.as_ptr(),
            d.as_ptr(),
            p.tmpfs.as_ptr(),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            c"size=0k,nr_inodes=1,mode=0555".as_ptr(),
        );
        if r < 0 && errno() != libc::ENOENT {
            return Err((Step::MaskProc, errno(), (100 + i) as u32));
        }
    }
    for (i, d) in p.proc_readonly.iter().enumerate() {
        let r = mount(
            d.as_ptr(),
            d.as_ptr(),
            ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            ptr::null(),
        );
        if r < 0 {
            if errno() == libc::ENOENT {
                continue;
            }
            return Err((Step::ReadOnlyProc, errno(), i as u32));
        }
        remount_bind(
            Step::ReadOnlyProc,
            i,
            d,
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        )?;
    }
    Ok(())
}

/// A minimal `/dev`: a small tmpfs holding bind mounts of six host device nodes and the
/// conventional symlinks, then made read-only.
fn mount_dev(p: &Plan) -> R {
    ck_i(
        Step::MountDev,
        0,
        mount(
            p.tmpfs.as_ptr(),
            p.dev_dir.as_ptr(),
            p.tmpfs.as_ptr(),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            p.dev_data.as_ptr(),
        ),
    )?;
    for (i, (host, target)) in p.dev_host.iter().zip(&p.dev_target).enumerate() {
        // SAFETY: create an empty file as a bind target; plan-owned path.
        let fd = unsafe {
            libc::open(
                target.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0o666,
            )
        };
        ck_i(Step::CreateDevNode, i, fd)?;
        // SAFETY: close the fd just opened.
        unsafe { libc::close(fd) };
        ck_i(
            Step::BindDevNode,
            i,
            mount(
                host.as_ptr(),
                target.as_ptr(),
                ptr::null(),
                libc::MS_BIND,
                ptr::null(),
            ),
        )?;
    }
    for (i, (link, target)) in p.dev_links.iter().enumerate() {
        // SAFETY: symlink with two plan-owned strings.
        ck_i(Step::DevSymlink, i, unsafe {
            libc::symlink(target.as_ptr(), link.as_ptr())
        })?;
    }
    remount_bind(
        Step::RemountDev,
        0,
        &p.dev_dir,
        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
    )
}

/// The only writable place: a size-limited, world-writable (sticky) tmpfs at `/tmp`.
fn mount_tmp(p: &Plan) -> R {
    ck_i(
        Step::MountTmp,
        0,
        mount(
            p.tmpfs.as_ptr(),
            p.tmp_dir.as_ptr(),
            p.tmpfs.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            p.tmp_data.as_ptr(),
        ),
    )
}

/// Configured mounts: bind, then remount nosuid+nodev and read-only unless granted writable.
fn bind_mounts(p: &Plan) -> R {
    for (i, b) in p.binds.iter().enumerate() {
        ck_i(
            Step::BindMount,
            i,
            mount(
                b.source.as_ptr(),
                b.target.as_ptr(),
                ptr::null(),
                libc::MS_BIND,
                ptr::null(),
            ),
        )?;
        let ro = if b.read_only { libc::MS_RDONLY } else { 0 };
        remount_bind(
            Step::RemountBind,
            i,
            &b.target,
            ro | libc::MS_NOSUID | libc::MS_NODEV,
        )?;
        if let Some((dev, ino)) = b.expect {
            // SAFETY: an all-zero `stat` is a valid value for stat(2) to overwrite.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: stat into our stack struct; the path is a plan-owned C string.
            let r = unsafe { libc::stat(b.target.as_ptr(), &mut st) };
            ck_i(Step::BindSourceChanged, i, r)?;
            if st.st_dev != dev || st.st_ino != ino {
                return Err((Step::BindSourceChanged, libc::ESTALE, i as u32));
            }
        }
    }
    Ok(())
}

/// Make the rootfs `/` and detach the host's tree (`pivot_root(".", ".")` stacks the old root
/// on top of the new one, so one lazy unmount removes it without needing a put_old directory).
fn pivot_into_rootfs(p: &Plan) -> R {
    // SAFETY: chdir/pivot_root/umount2 with plan-owned or static strings.
    unsafe {
        ck_i(Step::PivotRoot, 0, libc::chdir(p.rootfs.as_ptr()))?;
        ck(
            Step::PivotRoot,
            libc::syscall(libc::SYS_pivot_root, p.dot.as_ptr(), p.dot.as_ptr()),
        )?;
        ck_i(
            Step::DetachOldRoot,
            0,
            libc::umount2(p.dot.as_ptr(), libc::MNT_DETACH),
        )?;
        ck_i(Step::PivotRoot, 1, libc::chdir(p.slash.as_ptr()))?;
    }
    Ok(())
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
    let mut from: u32 = 3;
    for &k in &p.keep_fds {
        let k = k as u32;
        if k > from {
            close_range(from, k - 1)?;
        }
        from = k + 1;
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

enum Never {}

/// What init hands the workload child across `clone`.
struct WorkloadArgs<'a> {
    plan: &'a Plan,
    final_step: &'a dyn FinalStep,
}

/// The workload child's entry point on its own stack. Never returns: it execs or exits.
extern "C" fn workload_entry(arg: *mut libc::c_void) -> libc::c_int {
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
    // SAFETY: chdir to a plan-owned path (inside the new root).
    ck_i(Step::Cwd, 0, unsafe { libc::chdir(p.cwd.as_ptr()) })?;
    switch_identity(p)?;
    let channel = StepChannel {
        sock: p.fds.seccomp_sock,
    };
    fs.apply(&channel)
        .map_err(|e| (Step::FinalStep, e.errno, 0))?;
    exec(p)
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
fn exec(p: &Plan) -> Result<Never, (Step, i32, u32)> {
    let mut first_other: Option<(i32, u32)> = None;
    for (i, c) in p.exec_candidates.iter().enumerate() {
        // SAFETY: plan-owned, NUL-terminated path and null-terminated argv/envp arrays.
        unsafe { libc::execve(c.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr()) };
        let e = errno();
        if e != libc::ENOENT && e != libc::ENOTDIR && first_other.is_none() {
            first_other = Some((e, i as u32));
        }
    }
    let (e, i) = first_other.unwrap_or((libc::ENOENT, 0));
    Err((Step::Exec, e, i))
}
