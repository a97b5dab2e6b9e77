//! The named steps of sandbox setup, so a failure inside the child names what failed.

use std::fmt;

/// The named steps of sandbox setup; a failure names the step that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// Arrange SIGKILL on the death of the supervising thread.
    ParentDeathSignal = 1,
    /// Wait for the parent to write id maps and attach cgroups.
    WaitForParent,
    /// Become uid/gid 0 of the sandbox's user namespace.
    SetIds,
    /// Drop supplementary groups inherited from the host.
    SetGroups,
    /// Enter a new cgroup namespace rooted at the run's cgroup.
    CgroupNamespace,
    /// Set the hostname in the new UTS namespace.
    Hostname,
    /// Make every mount private so nothing propagates to the host.
    PrivatePropagation,
    /// Bind the rootfs onto itself.
    BindRootfs,
    /// Remount the rootfs read-only (repeating locked flags).
    RemountRootfs,
    /// Mount the tmpfs layer that holds mount points the image lacks.
    MountPointLayer,
    /// Create a missing mount point's directory in that layer (index: which directory).
    MountPointDir,
    /// Mount the read-only overlay of that layer over the rootfs.
    MountPointOverlay,
    /// Mount a fresh procfs.
    MountProc,
    /// Set `user.max_user_namespaces` to 0 inside the sandbox.
    LimitUserNamespaces,
    /// Mask a sensitive `/proc` path (index: file `i`, or dir `100 + i`).
    MaskProc,
    /// Make a `/proc` subtree read-only.
    ReadOnlyProc,
    /// Mount the tmpfs for `/dev`.
    MountDev,
    /// Create a device node placeholder.
    CreateDevNode,
    /// Bind a host device node.
    BindDevNode,
    /// Create a `/dev` symlink.
    DevSymlink,
    /// Remount `/dev` read-only.
    RemountDev,
    /// Mount the `/tmp` tmpfs.
    MountTmp,
    /// Bind a configured mount.
    BindMount,
    /// Remount a configured mount with its final flags.
    RemountBind,
    /// A pinned mount source was replaced between its check and the mount (errno `ESTALE`):
    /// what was mounted is not what was checked, so nothing runs.
    BindSourceChanged,
    /// `pivot_root` into the rootfs.
    PivotRoot,
    /// Detach the old root.
    DetachOldRoot,
    /// Bring up the loopback interface.
    LoopbackUp,
    /// Install stdio pipes as fds 0–2.
    Stdio,
    /// Close every other fd.
    CloseFds,
    /// Make init non-dumpable.
    NonDumpable,
    /// Fork the workload from init.
    ForkWorkload,
    /// Start a new session.
    NewSession,
    /// Set an rlimit (index into NOFILE, NPROC, CORE).
    Rlimit,
    /// Make the workload the preferred OOM victim (oom_score_adj 1000).
    OomScore,
    /// Change to the working directory.
    Cwd,
    /// Switch to the workload's uid/gid.
    SwitchIds,
    /// The caller's final confinement step.
    FinalStep,
    /// `execve` of the command.
    Exec,
    /// A pooled sandbox's workload: read the request's command, environment and working
    /// directory from the bind socket (end of stream: the service is gone, or dropped it unused).
    AwaitRequest,
}

impl Step {
    const ALL: [Step; 40] = [
        Step::ParentDeathSignal,
        Step::WaitForParent,
        Step::SetIds,
        Step::SetGroups,
        Step::CgroupNamespace,
        Step::Hostname,
        Step::PrivatePropagation,
        Step::BindRootfs,
        Step::RemountRootfs,
        Step::MountPointLayer,
        Step::MountPointDir,
        Step::MountPointOverlay,
        Step::MountProc,
        Step::LimitUserNamespaces,
        Step::MaskProc,
        Step::ReadOnlyProc,
        Step::MountDev,
        Step::CreateDevNode,
        Step::BindDevNode,
        Step::DevSymlink,
        Step::RemountDev,
        Step::MountTmp,
        Step::BindMount,
        Step::RemountBind,
        Step::BindSourceChanged,
        Step::PivotRoot,
        Step::DetachOldRoot,
        Step::LoopbackUp,
        Step::Stdio,
        Step::CloseFds,
        Step::NonDumpable,
        Step::ForkWorkload,
        Step::NewSession,
        Step::Rlimit,
        Step::OomScore,
        Step::Cwd,
        Step::SwitchIds,
        Step::FinalStep,
        Step::Exec,
        Step::AwaitRequest,
    ];

    pub(crate) fn from_u32(v: u32) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u32 == v)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
