//! Prometheus text metrics for the service: what an operator graphs and alerts on.
//!
//! Hand-written rather than a metrics crate: a handful of counters and one histogram, rendered
//! in the text exposition format, behind one mutex taken once per request.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the run latency histogram buckets.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, Default)]
struct Inner {
    /// (capability, result) -> count; result is `exit_0`, `exit_nonzero`, `signal` or an error code.
    invocations: BTreeMap<(String, String), u64>,
    /// error code -> count, for refusals (policy, arguments, verification, peers).
    denials: BTreeMap<String, u64>,
    verify_cache_hits: u64,
    verify_cache_misses: u64,
    /// Runs that took a sandbox started ahead (warm pool), and runs that started one afresh.
    sandboxes_warm: u64,
    sandboxes_cold: u64,
    /// Cumulative bucket counts, then sum and count.
    latency: Vec<u64>,
    latency_sum: f64,
    latency_count: u64,
}

/// The service's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One finished or refused invocation of `capability`.
    pub fn invocation(&self, capability: &str, result: &str) {
        *self
            .lock()
            .invocations
            .entry((capability.to_string(), result.to_string()))
            .or_default() += 1;
    }

    /// One refusal with this error code.
    pub fn denial(&self, code: &str) {
        *self.lock().denials.entry(code.to_string()).or_default() += 1;
    }

    /// One verification answered from the cache (`hit`) or decided afresh.
    pub fn verify_cache(&self, hit: bool) {
        let mut m = self.lock();
        if hit {
            m.verify_cache_hits += 1;
        } else {
            m.verify_cache_misses += 1;
        }
    }

    /// One run in a sandbox from the warm pool (`warm`) or started for it.
    pub fn sandbox(&self, warm: bool) {
        let mut m = self.lock();
        if warm {
            m.sandboxes_warm += 1;
        } else {
            m.sandboxes_cold += 1;
        }
    }

    /// The latency of one run, request to result.
    pub fn run_latency(&self, d: Duration) {
        let s = d.as_secs_f64();
        let mut m = self.lock();
        if m.latency.is_empty() {
            m.latency = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                m.latency[i] += 1;
            }
        }
        m.latency_sum += s;
        m.latency_count += 1;
    }

    /// The text exposition, with the gauges passed in (they live elsewhere).
    pub fn render(&self, in_flight: usize, queued: usize) -> String {
        let m = self.lock();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP perry_invocations_total Capability invocations by result."
        );
        let _ = writeln!(out, "# TYPE perry_invocations_total counter");
        for ((cap, result), n) in &m.invocations {
            let _ = writeln!(
                out,
                "perry_invocations_total{{capability=\"{}\",result=\"{}\"}} {n}",
                escape(cap),
                escape(result)
            );
        }
        let _ = writeln!(
            out,
            "# HELP perry_denials_total Requests refused, by error code."
        );
        let _ = writeln!(out, "# TYPE perry_denials_total counter");
        for (code, n) in &m.denials {
            let _ = writeln!(out, "perry_denials_total{{code=\"{}\"}} {n}", escape(code));
        }
        for (name, help, n) in [
            (
                "perry_verify_cache_hits_total",
                "Verifications answered from the cache.",
                m.verify_cache_hits,
            ),
            (
                "perry_verify_cache_misses_total",
                "Verifications decided afresh.",
                m.verify_cache_misses,
            ),
        ] {
            header(&mut out, name, help, "counter");
            let _ = writeln!(out, "{name} {n}");
        }
        header(
            &mut out,
            "perry_sandboxes_total",
            "Runs by how their sandbox started: warm (started ahead, the pool) or cold.",
            "counter",
        );
        for (start, n) in [("warm", m.sandboxes_warm), ("cold", m.sandboxes_cold)] {
            let _ = writeln!(out, "perry_sandboxes_total{{start=\"{start}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP perry_run_duration_seconds Invocation latency, request to result."
        );
        let _ = writeln!(out, "# TYPE perry_run_duration_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let n = m.latency.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "perry_run_duration_seconds_bucket{{le=\"{b}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "perry_run_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            m.latency_count
        );
        let _ = writeln!(out, "perry_run_duration_seconds_sum {}", m.latency_sum);
        let _ = writeln!(out, "perry_run_duration_seconds_count {}", m.latency_count);
        let _ = writeln!(out, "# HELP perry_in_flight Invocations running now.");
        let _ = writeln!(out, "# TYPE perry_in_flight gauge");
        let _ = writeln!(out, "perry_in_flight {in_flight}");
        let _ = writeln!(
            out,
            "# HELP perry_queue_depth Invocations waiting for a slot."
        );
        let _ = writeln!(out, "# TYPE perry_queue_depth gauge");
        let _ = writeln!(out, "perry_queue_depth {queued}");
        out
    }
}

/// The `# HELP` and `# TYPE` lines of one metric.
fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, quote, newline).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let m = Metrics::default();
        m.invocation("git-log", "exit_0");
        m.invocation("git-log", "exit_0");
        m.invocation("x\"y", "argument_denied");
        m.denial("argument_denied");
        m.verify_cache(true);
        m.verify_cache(false);
        m.run_latency(Duration::from_millis(7));
        m.run_latency(Duration::from_millis(300));
        let text = m.render(3, 2);
        assert!(
            text.contains("perry_invocations_total{capability=\"git-log\",result=\"exit_0\"} 2")
        );
        assert!(text.contains(
            "perry_invocations_total{capability=\"x\\\"y\",result=\"argument_denied\"} 1"
        ));
        assert!(text.contains("perry_denials_total{code=\"argument_denied\"} 1"));
        assert!(text.contains("perry_verify_cache_hits_total 1"));
        assert!(text.contains("perry_verify_cache_misses_total 1"));
        assert!(text.contains("perry_run_duration_seconds_bucket{le=\"0.005\"} 0"));
        assert!(text.contains("perry_run_duration_seconds_bucket{le=\"0.01\"} 1"));
        assert!(text.contains("perry_run_duration_seconds_bucket{le=\"0.5\"} 2"));
        assert!(text.contains("perry_run_duration_seconds_count 2"));
        assert!(text.contains("perry_in_flight 3"));
        assert!(text.contains("perry_queue_depth 2"));
    }
}
