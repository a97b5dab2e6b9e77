//! Host preparation and clean-up behind the executor: the kernel work a sandbox start would
//! otherwise wait for, and what a killed predecessor left behind. The CLI and the service call
//! these instead of reaching into the runtime.

use std::path::{Path, PathBuf};

/// What the caller is about to do, so the right kernel work is started ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarmUp {
    /// One sandbox soon (`run`, `cap run`): the first cgroup migration and one empty network
    /// namespace, in the background, overlapping verification and pulling.
    OneRun,
    /// A service that may run this many sandboxes at once: that many network namespaces kept
    /// ready between calls.
    Service {
        /// `[service] max_concurrent`.
        max_concurrent: usize,
    },
    /// A request is about to be verified: the slow first cgroup migration of an idle service,
    /// started now (a no-op when runs are frequent).
    Request,
}

/// Starts the background kernel work for `what` (best effort: without the privileges, runs
/// do the work themselves).
pub(crate) fn warm_up(what: WarmUp) {
    match what {
        WarmUp::OneRun => perry_runtime::native::prepare_for_one_run(),
        WarmUp::Service { max_concurrent } => {
            perry_runtime::native::prepare_network_namespaces(max_concurrent)
        }
        WarmUp::Request => perry_runtime::native::warm_up_cgroup_migration(),
    }
}

/// Removes what a killed predecessor can leave behind: cgroups of sandboxes whose supervisor is
/// gone (their processes died with it: init has a parent-death signal), interrupted blob
/// downloads and unpack staging directories under `state_dir`. Uid leases are OFD locks and
/// free themselves. Returns what was removed, for the log.
pub(crate) fn sweep_stale(state_dir: &Path) -> Vec<PathBuf> {
    let mut removed = perry_runtime::native::sweep_stale_cgroups();
    removed.extend(perry_runtime::unpack::sweep_staging(state_dir));
    removed
}

/// This process's hard limit on open files (`/proc/self/limits`), which a container's
/// `--ulimit nofile` may not exceed: the backend's runtime inherits it, and raising past it
/// fails the start with EPERM. `None` when it cannot be read or is unlimited.
pub(crate) fn nofile_hard_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    // "Max open files            1024                 20000                files"
    let hard = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .nth(1)?;
    hard.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hard_nofile_limit_is_read_and_bounds_the_soft_one() {
        let hard = super::nofile_hard_limit().expect("Linux has /proc/self/limits");
        let soft = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        assert!(hard >= soft, "{hard} < {soft}");
    }
}
