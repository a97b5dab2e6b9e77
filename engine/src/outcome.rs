//! What a finished run produced, and the `outcome` record that puts it on the audit log.

use std::time::Duration;

use perry_audit::{Action, Correlation, Decision, Event};
use perry_policies::{Digest, Tier, EXIT_REFUSED};
use perry_runtime::native;

/// What a finished run produced, with the facts a caller or reviewer needs about it.
#[derive(Clone, Debug)]
pub struct ExecOutcome {
    /// Exit status, signal, output, resource use and denied syscalls.
    pub run: native::Outcome,
    /// The image source as asked for.
    pub image: String,
    /// The platform manifest digest that ran.
    pub digest: Digest,
    /// The tier it ran under.
    pub tier: Tier,
    /// Whether verification was answered from the cache.
    pub cache_hit: bool,
    /// Blobs fetched from the registry for this run (0: all were stored).
    pub blobs_fetched: usize,
    /// Sequence number of the allow record in the audit log.
    pub audit_seq: u64,
    /// Sequence number of the `outcome` record, when it could be written (a full disk after
    /// the run must not turn a finished run into a failure; the allow record stands).
    pub outcome_seq: Option<u64>,
    /// Time from the request to the end of the run.
    pub duration: Duration,
    /// Whether the run took a sandbox started ahead (the service's warm pool).
    pub warm: bool,
}

impl ExecOutcome {
    /// The status a shell would see: the exit code, or 128 + the signal.
    pub fn shell_status(&self) -> i32 {
        match (self.run.exit_code, self.run.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => i32::from(EXIT_REFUSED),
        }
    }
}

/// The `outcome` record of a run whose allow record is `allow_seq`: how it ended, what it
/// cost, and every system call seccomp refused (a reviewer's strongest signal that a workload
/// tried something its tier forbids). Same correlation as the allow record.
pub(crate) fn outcome_event(
    run: &native::Outcome,
    allow_seq: u64,
    correlation: &Correlation,
) -> Event {
    let how = match (run.exit_code, run.signal) {
        (Some(c), _) => format!("exited {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "ended without a status".to_string(),
    };
    let denied: Vec<serde_json::Value> = run
        .denied_syscalls
        .iter()
        .map(|d| {
            serde_json::json!({
                "syscall": d.name,
                "errno": d.errno,
                "count": d.count,
            })
        })
        .collect();
    let mut reason = how;
    if run.timed_out {
        reason.push_str(" (timed out)");
    }
    if !run.denied_syscalls.is_empty() {
        // The table shows the reason: name what was refused, not only how often.
        let names: Vec<String> = run
            .denied_syscalls
            .iter()
            .map(|d| format!("{}×{}", d.name, d.count))
            .collect();
        reason.push_str(&format!("; seccomp refused {}", names.join(", ")));
    }
    Event::new(Action::Outcome, Decision::Observed)
        .correlation(correlation)
        .reason(reason)
        .detail("allow_seq", allow_seq)
        .detail("exit_code", run.exit_code.map(i64::from))
        .detail("signal", run.signal.map(i64::from))
        .detail("duration_ms", run.wall_time.as_millis() as u64)
        .detail("cpu_ms", run.cpu_time.as_millis() as u64)
        .detail("max_rss", run.max_rss)
        .detail("timed_out", run.timed_out)
        .detail("oom_killed", run.oom_killed)
        .detail(
            "output_truncated",
            run.stdout_truncated || run.stderr_truncated,
        )
        .detail("denied_syscalls", serde_json::Value::Array(denied))
}
