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

/// Runs `argv` (program first) with `timeout`; the child is killed when the timeout expires.
pub(crate) async fn run(argv: &[String], timeout: Duration) -> Result<Output, BackendError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| BackendError::InvalidConfig("empty backend command".into()))?;
    let verb = verb_of(args);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BackendError::Unavailable(format!("{program}: not found on PATH"))
        } else {
            BackendError::Io {
                what: format!("spawning {program}"),
                source: e,
            }
        }
    })?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(o)) => Ok(Output {
            code: o.status.code().unwrap_or(-1),
            stdout: o.stdout,
            stderr: o.stderr,
        }),
        Ok(Err(e)) => Err(BackendError::Io {
            what: format!("waiting for {program} {verb}"),
            source: e,
        }),
        Err(_) => Err(BackendError::Timeout {
            program: program.clone(),
            verb,
            secs: timeout.as_secs_f64(),
        }),
    }
}

/// The subcommand words of an argv (leading words up to the first flag or two words).
pub(crate) fn verb_of(args: &[String]) -> String {
    args.iter()
        .filter(|a| !a.starts_with('-'))
        .take(2)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Maps a failed call to a typed error: `not_found` when stderr says so, else `backend_error`.
pub(crate) fn failure(argv: &[String], kind: &'static str, name: &str, o: &Output) -> BackendError {
    let stderr = o.stderr_str();
    let l = stderr.to_ascii_lowercase();
    let missing = [
        "no such container",
        "no such image",
        "no such network",
        "no such volume",
        "no such object",
        "image not known",
        "network not found",
        "not found",
        "unable to find",
    ];
    if missing.iter().any(|m| l.contains(m)) {
        return BackendError::NotFound {
            kind,
            name: name.to_string(),
            stderr,
        };
    }
    BackendError::Cli {
        program: argv.first().cloned().unwrap_or_default(),
        verb: verb_of(argv.get(1..).unwrap_or_default()),
        exit_code: o.code,
        stderr,
    }
}
