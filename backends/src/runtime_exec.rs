//! `exec` straight through the container's OCI runtime (`runc exec`), without the podman CLI
//! in between: how a healthcheck probe costs 40 ms instead of 160.
//!
//! Why: every `service_healthy` wait is a series of execs, and podman's exec is its own Go
//! process, a conmon, and an exec session in its database — 130–170 ms each here, and eight
//! at once on two cores take a second, where eight `runc exec` take 140 ms. Those execs sit on
//! the critical path of every `compose up`.
//!
//! Why it is no weaker: given no process of its own, `runc exec` runs the command with the
//! process of the container's own bundle (`config.json`: user, capabilities, no_new_privs,
//! AppArmor, rlimits, environment, working directory) inside the container's namespaces and
//! cgroup, under the container's seccomp filter — which is what podman asks runc for on an
//! `exec` without options. So the direct path is taken only for an exec with no environment,
//! working directory or user of its own (those go to podman, which resolves user names in
//! the image), only for a container on the host kernel (never a gVisor one), only for root
//! podman driving runc with no runtime flags of its own, and only when runc's state for the
//! container's full id is on this host (`/run/runc/<id>/state.json`). When runc itself fails
//! — exit 255 with its `exec failed` message: the container stopped, the command is missing
//! — the answer is podman's, whose errors and exit codes callers know.
//!
//! A probe given up on (its timeout) gets SIGTERM through runc, which forwards it to the
//! command and reaps it; killing runc would orphan the command instead.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{self, Ending, Output};
use crate::BackendError;

/// The state directory root podman's runc uses when podman runs as root (runc's default).
const RUNC_ROOT: &str = "/run/runc";

/// runc on this host, reachable for the containers of one podman driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RuntimeExec {
    /// The runc binary podman was told to use (`--runtime`).
    program: String,
    /// runc's state root.
    root: PathBuf,
}

impl RuntimeExec {
    /// The direct path for podman's global flags `global`, when they name runc and nothing
    /// else that changes where or how it runs, and this process is root; `None` otherwise.
    pub(crate) fn for_podman(global: &[String]) -> Option<Self> {
        let [flag, runtime] = global else {
            return None;
        };
        let is_runc = Path::new(runtime).file_name().is_some_and(|n| n == "runc");
        (flag == "--runtime" && is_runc && rustix::process::geteuid().is_root()).then(|| {
            RuntimeExec {
                program: runtime.clone(),
                root: PathBuf::from(RUNC_ROOT),
            }
        })
    }

    /// Runs `cmd` in the container with full id `id`: `Ok(Some(output))` with the command's
    /// status, `Ok(None)` when runc does not hold the container or could not run the command
    /// (the caller asks podman).
    pub(crate) async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<Option<Output>, BackendError> {
        // A full id only: it is a path component below, and a name or prefix could match
        // another container's state.
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || cmd.is_empty() {
            return Ok(None);
        }
        if !self.root.join(id).join("state.json").is_file() {
            return Ok(None);
        }
        let mut argv = vec![
            self.program.clone(),
            "--root".into(),
            self.root.display().to_string(),
            "exec".into(),
            id.into(),
        ];
        argv.extend(cmd.iter().cloned());
        let o = cli::run_ending(&argv, timeout, Ending::Terminate).await?;
        Ok((!runc_failed(&o)).then_some(o))
    }
}

/// runc's own failure, not the command's: exit 255 with its error line on stderr. (A command
/// that exits 255 printing the same words is asked of podman once more: harmless for a probe.)
fn runc_failed(o: &Output) -> bool {
    o.code == 255 && o.stderr_str().contains("msg=\"exec failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_plain_runc_under_root_podman_takes_the_direct_path() {
        let root = rustix::process::geteuid().is_root();
        let direct = RuntimeExec::for_podman(&args(&["--runtime", "/usr/bin/runc"]));
        assert_eq!(direct.is_some(), root);
        assert_eq!(
            RuntimeExec::for_podman(&args(&["--runtime", "runc"])).is_some(),
            root
        );
        // Another runtime, runtime flags of podman's own, a remote podman, no runtime named.
        for g in [
            &["--runtime", "crun"][..],
            &["--runtime", "/usr/bin/runsc"],
            &["--runtime", "runc", "--runtime-flag", "root=/elsewhere"],
            &["--url", "unix:///run/podman.sock", "--runtime", "runc"],
            &[],
        ] {
            assert_eq!(RuntimeExec::for_podman(&args(g)), None, "{g:?}");
        }
    }

    #[test]
    fn runc_s_own_failures_are_told_from_the_command_s() {
        let o = |code, stderr: &str| Output {
            code,
            stdout: Vec::new(),
            stderr: stderr.as_bytes().to_vec(),
        };
        let runc = "time=\"2026-12-07T20:49:26Z\" level=error msg=\"exec failed: container does not exist\"";
        assert!(runc_failed(&o(255, runc)));
        assert!(!runc_failed(&o(255, "my own error")), "the command's 255");
        assert!(!runc_failed(&o(1, runc)), "the command's status");
    }

    #[tokio::test]
    async fn what_is_not_a_full_id_held_by_runc_is_left_to_podman() {
        let r = RuntimeExec {
            program: "runc".into(),
            root: PathBuf::from("/nonexistent-runc-root"),
        };
        let cmd = args(&["true"]);
        for id in ["web-1", "../../etc", &"a".repeat(63), &"0".repeat(64)] {
            assert!(r
                .exec(id, &cmd, Duration::from_secs(5))
                .await
                .unwrap()
                .is_none());
        }
        assert!(r
            .exec(&"0".repeat(64), &[], Duration::from_secs(5))
            .await
            .unwrap()
            .is_none());
    }
}
