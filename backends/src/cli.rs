//! Running a backend CLI: argv only (never a shell string), every call with a timeout.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::BackendError;

/// The captured result of one CLI call.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) code: i32,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

impl Output {
    pub(crate) fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_string()
    }
    pub(crate) fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

/// Starts `program args` with stdout and stderr piped, stdin closed, killed when dropped; a
/// program that is not there is `backend_unavailable`.
pub(crate) fn spawn_piped(
    program: &str,
    args: &[String],
) -> Result<tokio::process::Child, BackendError> {
    spawn(program, args, Ending::Kill)
}

/// How a call still running is ended when its caller gives up on it (its timeout, or the
/// future dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// SIGKILL: the CLI holds nothing that outlives it (every call but a direct exec).
    Kill,
    /// SIGTERM, and the CLI left to finish: `runc exec` forwards the signal to the command it
    /// runs in the container and reaps it, where killing runc would orphan the command.
    Terminate,
}

fn spawn(
    program: &str,
    args: &[String],
    ending: Ending,
) -> Result<tokio::process::Child, BackendError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(ending == Ending::Kill);
    cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BackendError::Unavailable(format!("{program}: not found on PATH"))
        } else {
            BackendError::Io {
                what: format!("spawning {program}"),
                source: e.into(),
            }
        }
    })
}

/// Runs `argv` (program first) with `timeout`; the child is killed when the timeout expires.
pub(crate) async fn run(argv: &[String], timeout: Duration) -> Result<Output, BackendError> {
    run_ending(argv, timeout, Ending::Kill).await
}

/// SIGTERM to a child through its pidfd when dropped armed: a pidfd never signals another
/// process that reused the pid.
struct TerminateOnDrop(Option<std::os::fd::OwnedFd>);

impl Drop for TerminateOnDrop {
    fn drop(&mut self) {
        if let Some(fd) = &self.0 {
            let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::TERM);
        }
    }
}

/// [`run`], ending a call its caller gives up on as `ending` says.
pub(crate) async fn run_ending(
    argv: &[String],
    timeout: Duration,
    ending: Ending,
) -> Result<Output, BackendError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| BackendError::InvalidConfig("empty backend command".into()))?;
    let verb = verb_of(args);
    let started = std::time::Instant::now();
    let child = spawn(program, args, ending)?;
    let mut terminate = TerminateOnDrop(match ending {
        Ending::Kill => None,
        Ending::Terminate => child
            .id()
            .and_then(|pid| rustix::process::Pid::from_raw(i32::try_from(pid).ok()?))
            .and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            }),
    });
    let waited = tokio::time::timeout(timeout, child.wait_with_output()).await;
    if waited.as_ref().is_ok_and(Result::is_ok) {
        // Exited and reaped: nothing left to end.
        terminate.0 = None;
    }
    match waited {
        Ok(Ok(o)) => {
            // `PERRY_LOG=debug` shows every backend command and what it cost.
            tracing::debug!(
                target: "perry::backend",
                ms = started.elapsed().as_millis() as u64,
                code = o.status.code().unwrap_or(-1),
                "{}",
                argv.join(" ")
            );
            Ok(Output {
                code: o.status.code().unwrap_or(-1),
                stdout: o.stdout,
                stderr: o.stderr,
            })
        }
        Ok(Err(e)) => Err(BackendError::Io {
            what: format!("waiting for {program} {verb}"),
            source: e.into(),
        }),
        Err(_) => Err(BackendError::Timeout {
            program: program.clone(),
            verb,
            secs: timeout.as_secs_f64(),
        }),
    }
}

/// Global flags (before the subcommand) that take a value, in podman, docker and nerdctl.
const VALUED_GLOBALS: [&str; 14] = [
    "--runtime",
    "--runtime-flag",
    "--url",
    "--connection",
    "--host",
    "-H",
    "--context",
    "--namespace",
    "-n",
    "--address",
    "--root",
    "--runroot",
    "--storage-driver",
    "--log-level",
];

/// The subcommand words of an argv without its program (`network create`): global flags and
/// their values are skipped, and so is lima's `shell <instance> nerdctl` prefix.
pub(crate) fn verb_of(args: &[String]) -> String {
    let mut args = args;
    if args.first().is_some_and(|a| a == "shell") && args.len() > 3 {
        args = &args[3..];
    }
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if VALUED_GLOBALS.contains(&a.as_str()) {
            it.next();
        } else if !a.starts_with('-') {
            words.push(a.clone());
            if words.len() == 2
                || !matches!(
                    a.as_str(),
                    "network" | "volume" | "image" | "container" | "system" | "machine"
                )
            {
                break;
            }
        }
    }
    words.join(" ")
}

/// What a backend's stderr says is missing, most specific first: (kind, phrases). podman,
/// docker and nerdctl word it differently; a phrase must name the object, so that e.g.
/// "executable file not found in $PATH" (the command, not a container) stays a `backend_error`.
const MISSING: [(&str, &[&str]); 4] = [
    (
        "container",
        &["no such container", "no container with name or id"],
    ),
    (
        "image",
        &[
            "no such image",
            "image not known",
            "manifest unknown",
            "repository does not exist",
        ],
    ),
    (
        "network",
        &[
            "no such network",
            "network not found",
            "unable to find network",
        ],
    ),
    ("volume", &["no such volume", "no volume with name"]),
];

/// stderr of a CLI whose daemon (or remote service) does not answer: `backend_unavailable`.
const DAEMON_DOWN: [&str; 6] = [
    "cannot connect to the docker daemon",
    "is the docker daemon running",
    "cannot connect to podman",
    "unable to connect to podman socket",
    "cannot access containerd socket",
    "failed to dial \"/run/containerd/containerd.sock\"",
];

/// The kind of object `stderr` says is missing, if it says so.
pub(crate) fn missing_kind(stderr: &str) -> Option<&'static str> {
    let l = stderr.to_ascii_lowercase();
    if let Some((kind, _)) = MISSING
        .iter()
        .find(|(_, phrases)| phrases.iter().any(|p| l.contains(p)))
    {
        return Some(kind);
    }
    // docker: "Error response from daemon: network x not found".
    l.lines()
        .any(|line| line.contains("network ") && line.trim_end().ends_with(" not found"))
        .then_some("network")
}

/// Maps a failed call to one typed error, the only place a CLI failure is classified:
/// the daemon not answering is `backend_unavailable`; stderr naming a missing container,
/// image, network or volume is `not_found` (with the kind stderr names, which may differ
/// from `kind`: `network connect` to a missing container); anything else is `backend_error`
/// carrying the CLI's exit code and stderr verbatim. Codes come from
/// [`BackendError::code`].
pub(crate) fn failure(argv: &[String], kind: &'static str, name: &str, o: &Output) -> BackendError {
    let stderr = o.stderr_str();
    let program = argv.first().cloned().unwrap_or_default();
    let l = stderr.to_ascii_lowercase();
    if DAEMON_DOWN.iter().any(|m| l.contains(m)) {
        let first = stderr
            .lines()
            .find(|x| !x.trim().is_empty())
            .unwrap_or_default();
        return BackendError::Unavailable(format!(
            "{program}: the daemon does not answer: {first}"
        ));
    }
    if let Some(found) = missing_kind(&stderr) {
        return BackendError::NotFound {
            kind: found,
            // Another kind than asked about: stderr is the only name we have for it.
            name: if found == kind {
                name.to_string()
            } else {
                stderr.clone()
            },
            stderr,
        };
    }
    BackendError::Cli {
        program,
        verb: verb_of(argv.get(1..).unwrap_or_default()),
        exit_code: o.code,
        stderr,
    }
}

#[cfg(test)]
mod tests {
    use super::{failure, Output};

    fn classify(code: i32, stderr: &str) -> crate::BackendError {
        let argv: Vec<String> = [
            "podman",
            "--runtime",
            "runc",
            "network",
            "connect",
            "n",
            "c",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        failure(
            &argv,
            "network",
            "n",
            &Output {
                code,
                stdout: Vec::new(),
                stderr: stderr.as_bytes().to_vec(),
            },
        )
    }

    #[test]
    fn stderr_is_classified_once_into_the_error_table() {
        // Real stderr of podman 4.3 and docker 20+/nerdctl for missing objects.
        for (stderr, kind) in [
            ("Error: inspecting object: no such container x", "container"),
            (
                "Error: no container with name or ID \"x\" found: no such container",
                "container",
            ),
            ("Error: x@sha256:11: image not known", "image"),
            ("Error response from daemon: No such image: x", "image"),
            (
                "reading manifest sha256:1 in r/x: manifest unknown",
                "image",
            ),
            (
                "Error: unable to find network with name or ID n: network not found",
                "network",
            ),
            ("Error response from daemon: network n not found", "network"),
            (
                "Error: no volume with name \"v\" found: no such volume",
                "volume",
            ),
        ] {
            let e = classify(125, stderr);
            match &e {
                crate::BackendError::NotFound { kind: k, .. } => assert_eq!(*k, kind, "{stderr}"),
                other => panic!("{stderr}: {other:?}"),
            }
            assert_eq!(e.code().as_str(), "not_found");
            assert_eq!(e.status(), 404);
        }
        // A missing command, user or file is the backend failing, not a missing object.
        for stderr in [
            "Error: runc: exec: \"nope\": executable file not found in $PATH: OCI runtime attempted to invoke a command that was not found",
            "Error: unable to find user nobody2: no matching entries in passwd file",
            "Error: open /x: no such file or directory",
        ] {
            let e = classify(126, stderr);
            assert_eq!(e.code().as_str(), "backend_error", "{stderr}");
            assert_eq!(e.exit_code(), Some(126));
            assert!(e.to_string().contains(stderr), "{e}");
            assert!(e.to_string().contains("podman network connect failed"), "{e}");
        }
        let e = classify(
            1,
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
        );
        assert_eq!(e.code().as_str(), "backend_unavailable", "{e}");
        assert_eq!(e.status(), 503);
    }

    #[test]
    fn the_verb_skips_global_flags_and_the_lima_prefix() {
        let v = |a: &[&str]| super::verb_of(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            v(&["--runtime", "runc", "network", "connect", "n", "c"]),
            "network connect"
        );
        assert_eq!(
            v(&[
                "--runtime",
                "/usr/bin/runsc",
                "--runtime-flag",
                "oci-seccomp",
                "run",
                "--rm",
                "x"
            ]),
            "run"
        );
        assert_eq!(
            v(&["shell", "default", "nerdctl", "volume", "rm", "v"]),
            "volume rm"
        );
        assert_eq!(v(&["ps", "--all"]), "ps");
        assert_eq!(v(&["--version"]), "");
    }
}
