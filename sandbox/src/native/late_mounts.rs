//! A request's read-only bind mounts (its workspace) moved into a sandbox that waits in the
//! warm pool, before the sandbox learns its command.
//!
//! Each source is cloned as a detached mount in the host's mount namespace (`open_tree`), made
//! read-only, nosuid, nodev and private while it is still detached and invisible to anyone
//! (`mount_setattr`), and only then attached at its target inside the sandbox's own mount
//! namespace (`setns` to init's, then `move_mount`). The service is multi-threaded and a process
//! whose threads share their filesystem context may not change mount namespace, so the attach
//! runs on a short-lived thread of its own that first unshares that context; the thread ends
//! with the attach, and the rest of the service never leaves the host's namespace.
//!
//! # Why this is no weaker than a cold run's bind
//!
//! - A pinned source (every workspace is, see [`BindMount::pinned`]) is cloned from its open
//!   descriptor: what gets mounted is the very directory that was opened and checked, with no
//!   path resolved again. (A cold run mounts by path and then compares device and inode.)
//! - The mount is never visible writable: its flags are set before it is attached.
//! - The target is resolved inside the sandbox's root, refusing every symlink, as the plan
//!   already checked for the cold path.
//! - The workload is parked before `execve`, confined, blocked reading its bind socket: nothing
//!   runs in the sandbox between its setup and this attach.
//! - Landlock still applies: reading below the mount is granted by the rule on `/`, which the
//!   kernel's path walk reaches across the mount point.
//!
//! Writable mounts are not bound late: a write grant is a Landlock rule on the mounted directory
//! itself, and the rules are fixed when the waiting workload was confined, before any request;
//! a rule on the directory under the mount point would not apply (Landlock skips hidden mount
//! points). A request with a writable mount runs cold.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};
use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};
use rustix::thread::{move_into_thread_name_spaces, ThreadNameSpaceType, UnshareFlags};

use super::error::{last, sys};
use super::{BindMount, RunError};

/// The kernel's `struct mount_attr` (version 0, 32 bytes), which `libc` does not define.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// True when every one of `mounts` can be bound into a waiting sandbox: read-only ones only
/// (see the module docs for why writable ones run cold).
pub(crate) fn bindable_late(mounts: &[BindMount]) -> bool {
    mounts.iter().all(|m| m.read_only)
}

/// Attaches `mounts` (all read-only) at their targets inside the mount namespace of the sandbox
/// whose init `init` is a pidfd of. Nothing is attached unless every source could be cloned.
pub(crate) fn bind_into(init: BorrowedFd<'_>, mounts: &[BindMount]) -> Result<(), RunError> {
    let trees = mounts
        .iter()
        .map(detached_read_only)
        .collect::<Result<Vec<_>, _>>()?;
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("perry-late-mount".into())
            .spawn_scoped(s, || attach_inside(init, mounts, &trees))
            .map_err(sys("starting the mount thread"))?
            .join()
            .unwrap_or_else(|_| Err(sys("the mount thread")(io::Error::other("it panicked"))))
    })
}

/// `m`'s source as a detached mount, read-only, nosuid, nodev and private.
fn detached_read_only(m: &BindMount) -> Result<OwnedFd, RunError> {
    let clone = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    let tree = match &m.pinned {
        Some(fd) => open_tree(fd.as_fd(), "", clone | OpenTreeFlags::AT_EMPTY_PATH),
        None => open_tree(CWD, &m.source, clone),
    }
    .map_err(|e| sys("open_tree of a mount source")(e.into()))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        // A clone of a shared host mount would join its peer group: mounts made later below
        // the workspace on the host would then appear in the sandbox.
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes from `attr`, a live value laid
    // out as the kernel's `struct mount_attr` version 0; the path is an empty C string with
    // AT_EMPTY_PATH, so only the open descriptor `tree` is acted on.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(last("mount_setattr"));
    }
    Ok(tree)
}

/// Runs on a thread of its own: joins the sandbox's mount namespace and attaches each tree.
fn attach_inside(
    init: BorrowedFd<'_>,
    mounts: &[BindMount],
    trees: &[OwnedFd],
) -> Result<(), RunError> {
    // SAFETY: unsharing CLONE_FS gives this thread its own root, cwd and umask, which setns to
    // a mount namespace requires; descriptor tables stay shared (no CLONE_FILES), so no thread
    // can see descriptors it cannot use. The thread ends when this function returns.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS) }
        .map_err(|e| sys("unshare(CLONE_FS)")(e.into()))?;
    move_into_thread_name_spaces(init, ThreadNameSpaceType::MOUNT)
        .map_err(|e| sys("setns to the sandbox's mount namespace")(e.into()))?;
    for (m, tree) in mounts.iter().zip(trees) {
        let target = openat2(
            CWD,
            &m.target,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| sys("opening a mount target in the sandbox")(e.into()))?;
        move_mount(
            tree,
            "",
            &target,
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map_err(|e| sys("move_mount into the sandbox")(e.into()))?;
    }
    Ok(())
}
