//! Init's filesystem steps before `pivot_root`: private propagation, the read-only rootfs and
//! the mount points it lacks, `/proc` with its masks, `/dev`, `/tmp`, the configured binds.

use std::ffi::CStr;
use std::ptr;

use super::{ck, ck_i, errno, Plan, Step, R};

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

/// Nothing we mount may propagate back to the host, and `pivot_root` refuses shared mounts.
pub(super) fn private_propagation() -> R {
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
pub(super) fn bind_rootfs_read_only(p: &Plan) -> R {
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
pub(super) fn provide_missing_mount_points(p: &Plan) -> R {
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
pub(super) fn mount_proc(p: &Plan) -> R {
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
pub(super) fn limit_nested_user_namespaces(p: &Plan) -> R {
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
pub(super) fn mask_proc(p: &Plan) -> R {
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
pub(super) fn mount_dev(p: &Plan) -> R {
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
pub(super) fn mount_tmp(p: &Plan) -> R {
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
pub(super) fn bind_mounts(p: &Plan) -> R {
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
pub(super) fn pivot_into_rootfs(p: &Plan) -> R {
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
