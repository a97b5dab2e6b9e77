//! Our own healthcheck runner, with compose's semantics: probes every `start_interval` during
//! `start_period` (where failures do not count), then every `interval`; each probe bounded by
//! `timeout`; `retries` consecutive failures make the service unhealthy; the first success
//! makes it healthy. A container that exits is a verdict of its own, and so is the caller's
//! deadline: no wait is unbounded.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// What a healthcheck runs (compose `healthcheck.test`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthTest {
    /// `["NONE"]` or `disable: true`: the service has no healthcheck.
    None,
    /// `["CMD", argv…]`: run argv directly.
    Cmd(Vec<String>),
    /// `["CMD-SHELL", "cmd"]` or a plain string: run through `/bin/sh -c`.
    Shell(String),
}

impl HealthTest {
    /// Reads compose's forms: `["CMD", …]`, `["CMD-SHELL", "…"]`, `["NONE"]`, or a string.
    pub fn from_compose(test: &[String]) -> Result<Self, String> {
        match test.split_first() {
            None => Ok(HealthTest::None),
            Some((first, rest)) => match first.as_str() {
                "NONE" => Ok(HealthTest::None),
                "CMD" if !rest.is_empty() => Ok(HealthTest::Cmd(rest.to_vec())),
                "CMD-SHELL" if rest.len() == 1 => Ok(HealthTest::Shell(rest[0].clone())),
                "CMD" => Err("`CMD` needs a command after it".into()),
                "CMD-SHELL" => Err("`CMD-SHELL` takes exactly one command string".into()),
                _ if rest.is_empty() => Ok(HealthTest::Shell(first.clone())),
                other => Err(format!(
                    "the first element must be CMD, CMD-SHELL or NONE, not `{other}`"
                )),
            },
        }
    }

    /// The argv to exec in the container, or `None` without a healthcheck.
    pub fn argv(&self) -> Option<Vec<String>> {
        match self {
            HealthTest::None => None,
            HealthTest::Cmd(v) => Some(v.clone()),
            HealthTest::Shell(s) => Some(vec!["/bin/sh".into(), "-c".into(), s.clone()]),
        }
    }
}

/// A healthcheck with compose's defaults (interval 30s, timeout 30s, retries 3, start period
/// 0s, start interval 5s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSpec {
    /// What to run.
    pub test: HealthTest,
    /// Between probes after the start period.
    pub interval: Duration,
    /// Longest a probe may take; a probe that takes longer failed.
    pub timeout: Duration,
    /// Consecutive failures after the start period that make the service unhealthy.
    pub retries: u32,
    /// Time to start up during which failures do not count.
    pub start_period: Duration,
    /// Between probes during the start period.
    pub start_interval: Duration,
}

impl HealthSpec {
    /// `test` with compose's default timings.
    pub fn new(test: HealthTest) -> Self {
        Self {
            test,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            retries: 3,
            start_period: Duration::ZERO,
            start_interval: Duration::from_secs(5),
        }
    }
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The test ran and exited with this status (0 passes), with what it printed.
    Ran {
        /// Its exit status.
        exit_code: i32,
        /// stdout and stderr, for the failure message.
        output: String,
    },
    /// The container is not running any more.
    Exited {
        /// Its exit status, if known.
        exit_code: Option<i32>,
    },
    /// The probe could not be run (backend error); counts as a failure.
    Failed(String),
}

/// How a wait for `service_healthy` ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthVerdict {
    /// A probe passed.
    Healthy {
        /// Probes run, the passing one included.
        probes: u32,
    },
    /// `retries` consecutive failures after the start period.
    Unhealthy {
        /// Probes run.
        probes: u32,
        /// The last failure, in words.
        last: String,
    },
    /// The container exited before it became healthy.
    Exited {
        /// Its exit status, if known.
        exit_code: Option<i32>,
    },
    /// The service has no healthcheck, so `service_healthy` can never be met.
    NoHealthcheck,
    /// The deadline passed first.
    DeadlineExceeded {
        /// Probes run.
        probes: u32,
        /// The last failure, if any.
        last: Option<String>,
    },
}

impl HealthVerdict {
    /// True only for [`HealthVerdict::Healthy`].
    pub fn is_healthy(&self) -> bool {
        matches!(self, HealthVerdict::Healthy { .. })
    }
}

/// Waits until the service is healthy, unhealthy, gone, or `deadline` passes. `probe` runs the
/// test once (it is given the argv and the per-probe timeout to pass to the backend's exec; a
/// probe still running at the timeout is cancelled and counts as a failure).
pub async fn wait_healthy<F, Fut>(
    spec: &HealthSpec,
    deadline: Instant,
    mut probe: F,
) -> HealthVerdict
where
    F: FnMut(Vec<String>, Duration) -> Fut,
    Fut: Future<Output = Probe>,
{
    let Some(argv) = spec.test.argv() else {
        return HealthVerdict::NoHealthcheck;
    };
    let started = Instant::now();
    let mut probes = 0;
    let mut failures = 0;
    let mut last: Option<String> = None;
    loop {
        if Instant::now() >= deadline {
            return HealthVerdict::DeadlineExceeded { probes, last };
        }
        probes += 1;
        let budget = spec
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let outcome = tokio::time::timeout(budget, probe(argv.clone(), budget)).await;
        let in_start_period = started.elapsed() < spec.start_period;
        let failure = match outcome {
            Ok(Probe::Ran { exit_code: 0, .. }) => return HealthVerdict::Healthy { probes },
            Ok(Probe::Exited { exit_code }) => return HealthVerdict::Exited { exit_code },
            Ok(Probe::Ran { exit_code, output }) => {
                format!("exit {exit_code}: {}", output.trim())
            }
            Ok(Probe::Failed(why)) => why,
            Err(_) => format!("timed out after {budget:?}"),
        };
        last = Some(failure.clone());
        if !in_start_period {
            failures += 1;
            if failures >= spec.retries.max(1) {
                return HealthVerdict::Unhealthy {
                    probes,
                    last: failure,
                };
            }
        }
        let pause = if started.elapsed() < spec.start_period {
            spec.start_interval
        } else {
            spec.interval
        };
        let wake = (Instant::now() + pause).min(deadline);
        tokio::time::sleep_until(wake).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn spec() -> HealthSpec {
        HealthSpec {
            test: HealthTest::Cmd(vec!["pg_isready".into()]),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            retries: 3,
            start_period: Duration::ZERO,
            start_interval: Duration::from_millis(500),
        }
    }

    type Calls = Arc<Mutex<Vec<Instant>>>;

    /// A scripted probe: answers in order, then repeats the last answer; records call times.
    fn scripted(
        answers: Vec<Probe>,
    ) -> (
        impl FnMut(Vec<String>, Duration) -> std::future::Ready<Probe>,
        Calls,
    ) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let mut i = 0;
        (
            move |_argv, _t| {
                seen.lock().unwrap().push(Instant::now());
                let a = answers[i.min(answers.len() - 1)].clone();
                i += 1;
                std::future::ready(a)
            },
            calls,
        )
    }

    fn fail() -> Probe {
        Probe::Ran {
            exit_code: 1,
            output: "no response".into(),
        }
    }

    fn pass() -> Probe {
        Probe::Ran {
            exit_code: 0,
            output: String::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_consecutive_failures_make_it_unhealthy_at_the_interval() {
        let (p, calls) = scripted(vec![fail()]);
        let v = wait_healthy(&spec(), Instant::now() + Duration::from_secs(60), p).await;
        assert_eq!(
            v,
            HealthVerdict::Unhealthy {
                probes: 3,
                last: "exit 1: no response".into()
            }
        );
        let c = calls.lock().unwrap();
        assert_eq!(c[1] - c[0], Duration::from_secs(2));
        assert_eq!(c[2] - c[1], Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_the_start_period_do_not_count_and_use_the_start_interval() {
        let mut s = spec();
        s.start_period = Duration::from_secs(3);
        // Five failures inside the start period, then a pass: healthy, not unhealthy.
        let (p, calls) = scripted(vec![fail(), fail(), fail(), fail(), fail(), fail(), pass()]);
        let v = wait_healthy(&s, Instant::now() + Duration::from_secs(60), p).await;
        assert_eq!(v, HealthVerdict::Healthy { probes: 7 });
        let c = calls.lock().unwrap();
        assert_eq!(c[1] - c[0], Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_probe_times_out_and_counts_as_a_failure() {
        let mut s = spec();
        s.retries = 2;
        let v = wait_healthy(&s, Instant::now() + Duration::from_secs(60), |_a, _t| {
            std::future::pending::<Probe>()
        })
        .await;
        assert!(
            matches!(&v, HealthVerdict::Unhealthy { probes: 2, last } if last.starts_with("timed out")),
            "{v:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_ends_every_wait() {
        let mut s = spec();
        s.retries = 1000;
        let start = Instant::now();
        let (p, _) = scripted(vec![fail()]);
        let v = wait_healthy(&s, start + Duration::from_secs(7), p).await;
        assert!(matches!(v, HealthVerdict::DeadlineExceeded { .. }), "{v:?}");
        assert!(Instant::now() - start <= Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn an_exited_container_and_a_missing_healthcheck_are_verdicts_of_their_own() {
        let (p, _) = scripted(vec![Probe::Exited { exit_code: Some(3) }]);
        let v = wait_healthy(&spec(), Instant::now() + Duration::from_secs(60), p).await;
        assert_eq!(v, HealthVerdict::Exited { exit_code: Some(3) });
        let mut s = spec();
        s.test = HealthTest::None;
        let (p, calls) = scripted(vec![pass()]);
        let v = wait_healthy(&s, Instant::now() + Duration::from_secs(60), p).await;
        assert_eq!(v, HealthVerdict::NoHealthcheck);
        assert!(calls.lock().unwrap().is_empty());
    }

    #[test]
    fn compose_test_forms() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            HealthTest::from_compose(&s(&["CMD", "pg_isready", "-q"]))
                .unwrap()
                .argv(),
            Some(s(&["pg_isready", "-q"]))
        );
        assert_eq!(
            HealthTest::from_compose(&s(&["CMD-SHELL", "curl -f localhost || exit 1"]))
                .unwrap()
                .argv(),
            Some(s(&["/bin/sh", "-c", "curl -f localhost || exit 1"]))
        );
        assert_eq!(
            HealthTest::from_compose(&s(&["NONE"])).unwrap(),
            HealthTest::None
        );
        assert!(HealthTest::from_compose(&s(&["CMD"])).is_err());
        assert!(HealthTest::from_compose(&s(&["RUN", "x"])).is_err());
    }
}
