//! `up`, rollback and `down` on real podman (runc), with images signed by the loopback sigstore
//! stack and verified through the executor. What is left behind is checked by asking podman
//! directly (`podman ps/network ls/volume ls --filter label=…`), not through our backend code.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use perry_audit::{Actor, AuditLog, Correlation, LogOptions};
use perry_backends::{DockerProtocol, Fault, FaultyBackend};
use perry_engine::orchestrate::{
    DownOptions, HealthSpec, HealthTest, NetworkDecl, NetworkUse, OrchestrateError, Orchestrator,
    ProjectResources, ServiceShape, UpOptions, VolumeDecl, VolumeUse,
};
use perry_engine::plan::{Condition, DependsOn, Plan, ServiceAsk, ServiceInput};
use perry_engine::{Executor, Platform};
use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};

/// One registry with signed `up/{db,app,proxy}`, shared by the binary's tests.
fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let reg = Registry::start();
        for name in ["db", "app", "proxy"] {
            let repo = format!("up/{name}");
            let pushed = reg.push_image(&repo, "v1", &TinyImage::busybox_marked("amd64", name));
            SigStack::shared().sign(&reg, &repo, &pushed.digest, &SignOptions::default());
        }
        reg
    })
}

fn executor() -> (tempfile::TempDir, Executor) {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let path = ConfigBuilder::new(reg, SigStack::shared()).write(dir.path());
    let config = perry_policies::Config::load(&path).unwrap();
    let audit = std::sync::Arc::new(AuditLog::open(LogOptions::from_config(&config)).unwrap());
    (dir, Executor::new(config, audit).unwrap())
}

/// podman as this host needs it (crun fails on its hybrid cgroups).
fn podman() -> DockerProtocol {
    DockerProtocol::podman(Some("runc"))
        .with_extra_args(vec!["--ulimit".into(), "nproc=1024:1024".into()])
}

/// One runtime for the whole test binary: the executor's registry client keeps pooled
/// connections whose tasks live on the runtime that opened them, so a runtime per call would
/// leave them dangling (and the fault sweep plans from several threads at once).
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("perrytest-{prefix}-{}-{n:x}", std::process::id())
}

fn health(test: &str, retries: u32) -> HealthSpec {
    HealthSpec {
        test: HealthTest::Shell(test.into()),
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
        retries,
        start_period: Duration::ZERO,
        start_interval: Duration::from_millis(100),
    }
}

fn service(
    name: &str,
    script: &str,
    check: Option<HealthSpec>,
    deps: &[(&str, Condition)],
) -> ServiceInput {
    ServiceInput {
        ask: ServiceAsk {
            name: name.into(),
            image: Some(format!("{}/up/{name}:v1", registry().host())),
            ..Default::default()
        },
        shape: ServiceShape {
            command: vec!["sh".into(), "-c".into(), script.into()],
            healthcheck: check,
            stop_grace: Duration::from_secs(1),
            ..Default::default()
        },
        depends_on: deps
            .iter()
            .map(|(d, c)| DependsOn {
                service: d.to_string(),
                condition: *c,
                required: true,
                restart: false,
            })
            .collect(),
    }
}

/// db (healthy once it wrote its marker, with a named volume) <- app (healthy) <- proxy.
fn stack(db_check: &str, db_retries: u32) -> Vec<ServiceInput> {
    let mut db = service(
        "db",
        "sleep 0.5; touch /tmp/ready; exec sleep 600",
        Some(health(db_check, db_retries)),
        &[],
    );
    db.shape.volumes.push(VolumeUse {
        volume: "pgdata".into(),
        target: "/data".into(),
        read_only: false,
    });
    vec![
        service(
            "proxy",
            "exec sleep 600",
            None,
            &[("app", Condition::Healthy)],
        ),
        service(
            "app",
            "exec sleep 600",
            Some(health("true", 3)),
            &[("db", Condition::Healthy)],
        ),
        db,
    ]
}

fn plan(x: &Executor, project: &str, services: Vec<ServiceInput>) -> Plan {
    rt().block_on(x.plan(
        project,
        services,
        &Platform::default(),
        Actor::current(),
        &Correlation::new(),
    ))
    .unwrap()
}

/// Everything podman holds with the project's label, asked of podman itself.
fn left_behind(project: &str) -> Vec<String> {
    let filter = format!("label=com.docker.compose.project={project}");
    let mut out = Vec::new();
    for (kind, args) in [
        ("container", vec!["ps", "-a", "-q", "--filter", &filter]),
        ("network", vec!["network", "ls", "-q", "--filter", &filter]),
        ("volume", vec!["volume", "ls", "-q", "--filter", &filter]),
    ] {
        let o = Command::new("podman").args(&args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| format!("{kind} {l}")),
        );
    }
    out
}

fn label(container: &str, key: &str) -> String {
    let o = Command::new("podman")
        .args([
            "inspect",
            "--format",
            &format!("{{{{index .Config.Labels \"{key}\"}}}}"),
            container,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn records(dir: &tempfile::TempDir) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.path().join("state/audit/log.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// When podman started `container`, in the audit log's fixed-width UTC format (so the two
/// compare as strings).
fn started_at(container: &str) -> String {
    let o = Command::new("podman")
        .args([
            "inspect",
            "--format",
            "{{.State.StartedAt.UTC.Format \"2006-01-02T15:04:05.000000Z\"}}",
            container,
        ])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(t.len(), 27, "podman's start time of {container}: {t:?}");
    t
}

fn seq_of(recs: &[serde_json::Value], action: &str, container: &str) -> u64 {
    recs.iter()
        .find(|r| r["action"] == action && r["details"]["container"] == container)
        .and_then(|r| r["seq"].as_u64())
        .unwrap_or_else(|| panic!("no {action} record for {container}"))
}

fn opts(wait_timeout: Duration) -> UpOptions {
    UpOptions {
        wait: true,
        wait_timeout,
        remove_orphans: false,
    }
}

#[test]
fn the_stack_comes_up_healthy_in_dependency_order_then_changes_nothing_and_down_leaves_nothing() {
    let (dir, x) = executor();
    let project = unique("stack");
    let plan = plan(&x, &project, stack("test -f /tmp/ready", 3));
    let podman = podman();
    let run = Correlation::new();
    let orch = Orchestrator::new(&x, &podman, &project, Actor::current(), run.clone());
    let report = rt()
        .block_on(orch.up(
            &plan,
            &ProjectResources::default(),
            &opts(Duration::from_secs(60)),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let order: Vec<(&str, &str)> = report
        .services
        .iter()
        .map(|s| (s.service.as_str(), s.state))
        .collect();
    assert_eq!(
        order,
        [("db", "created"), ("app", "created"), ("proxy", "created")]
    );
    // Every container was created before any started (as compose does); each dependent was
    // started only after its dependency's healthcheck passed: podman's own start time of
    // the dependent is later than our healthy verdict on the dependency.
    let recs = records(&dir);
    let db = format!("{project}-db-1");
    let app = format!("{project}-app-1");
    let proxy = format!("{project}-proxy-1");
    assert!(seq_of(&recs, "create", &proxy) < seq_of(&recs, "health", &db));
    let healthy_at = |c: &str| {
        recs.iter()
            .find(|r| r["action"] == "health" && r["details"]["container"] == c)
            .and_then(|r| r["time"].as_str())
            .unwrap_or_else(|| panic!("no health record for {c}"))
            .to_string()
    };
    assert!(
        healthy_at(&db) < started_at(&app),
        "{} {}",
        healthy_at(&db),
        started_at(&app)
    );
    assert!(healthy_at(&app) < started_at(&proxy));
    assert!(recs
        .iter()
        .any(|r| r["action"] == "up" && r["decision"] == "allow"));
    // Labelled like compose, plus the run and the pinned digest the plan verified.
    let pinned = plan
        .graph
        .node(plan.graph.id("db").unwrap())
        .verification
        .image
        .pinned_reference();
    assert_eq!(label(&db, "com.docker.compose.project"), project);
    assert_eq!(label(&db, "com.docker.compose.service"), "db");
    assert_eq!(label(&db, "com.docker.compose.image"), pinned);
    assert_eq!(label(&db, "io.perry-sandbox.run"), run.as_str());
    assert_eq!(label(&db, "io.perry-sandbox.tier"), "hardened");
    assert_eq!(label(&db, "com.docker.compose.config-hash").len(), 32);
    assert!(!dir
        .path()
        .join(format!("state/journal/{project}.json"))
        .exists());

    // A second up with nothing changed changes nothing.
    let again = Orchestrator::new(&x, &podman, &project, Actor::current(), Correlation::new());
    let report = rt()
        .block_on(again.up(
            &plan,
            &ProjectResources::default(),
            &opts(Duration::from_secs(60)),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.services.iter().all(|s| s.state == "unchanged"),
        "{:?}",
        report.services
    );
    assert_eq!(label(&db, "io.perry-sandbox.run"), run.as_str());
    let ps = rt().block_on(again.ps(&[])).unwrap();
    assert_eq!(ps.len(), 3);
    assert!(ps
        .iter()
        .filter(|p| p.service != "proxy")
        .all(|p| p.health.as_deref() == Some("healthy")));

    let down = rt()
        .block_on(again.down(&DownOptions {
            volumes: true,
            timeout: Some(Duration::from_secs(1)),
        }))
        .unwrap();
    // Dependents go first.
    let pos = |c: &str| {
        down.removed
            .iter()
            .position(|r| r == &format!("container {c}"))
            .unwrap()
    };
    assert!(
        pos(&proxy) < pos(&app) && pos(&app) < pos(&db),
        "{:?}",
        down.removed
    );
    assert!(down.leftovers.is_empty(), "{:?}", down.leftovers);
    assert_eq!(left_behind(&project), Vec::<String>::new());
}

#[test]
fn a_healthcheck_that_never_passes_fails_the_up_and_rolls_everything_back() {
    let (dir, x) = executor();
    let project = unique("unhealthy");
    let plan = plan(&x, &project, stack("false", 2));
    let podman = podman();
    let orch = Orchestrator::new(&x, &podman, &project, Actor::current(), Correlation::new());
    let e = rt()
        .block_on(orch.up(
            &plan,
            &ProjectResources::default(),
            &opts(Duration::from_secs(60)),
        ))
        .unwrap_err();
    assert!(
        matches!(&e.cause, OrchestrateError::Service { service, timed_out: false, .. } if service == "db"),
        "{e}"
    );
    assert_eq!(e.code().as_str(), "service_failed");
    assert_eq!(e.code().exit(), 1);
    let rb = e.rollback.as_ref().expect("rolled back");
    assert!(rb.is_clean(), "{rb:?}");
    let db = format!("{project}-db-1");
    assert!(rb.removed.contains(&format!("container {db}")), "{rb:?}");
    assert!(
        rb.removed.contains(&format!("volume {project}_pgdata")),
        "{rb:?}"
    );
    assert_eq!(left_behind(&project), Vec::<String>::new());
    assert!(!dir
        .path()
        .join(format!("state/journal/{project}.json"))
        .exists());
    let recs = records(&dir);
    assert!(recs
        .iter()
        .any(|r| r["action"] == "health" && r["decision"] == "deny"));
    assert!(recs.iter().any(|r| r["action"] == "rollback"));
    assert!(recs
        .iter()
        .any(|r| r["action"] == "up" && r["decision"] == "deny"));
}

#[test]
fn a_wait_that_never_ends_is_cut_at_the_deadline_and_rolled_back() {
    let (_dir, x) = executor();
    let project = unique("deadline");
    let plan = plan(&x, &project, stack("false", 100_000));
    let podman = podman();
    let orch = Orchestrator::new(&x, &podman, &project, Actor::current(), Correlation::new());
    let t = Instant::now();
    let e = rt()
        .block_on(orch.up(
            &plan,
            &ProjectResources::default(),
            &opts(Duration::from_secs(3)),
        ))
        .unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(&e.cause, OrchestrateError::Service { service, timed_out: true, .. } if service == "db"),
        "{e}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(left_behind(&project), Vec::<String>::new());
}

/// An `up` that dies mid-way (its future dropped while it waits, as a `kill -9` would stop it)
/// leaves its containers and its journal; the next `down` rolls it back first.
#[test]
fn an_up_killed_mid_way_is_rolled_back_by_the_next_down() {
    let (dir, x) = executor();
    let project = unique("killed");
    let plan = plan(&x, &project, stack("sleep 3600", 3));
    let podman = podman();
    let orch = Orchestrator::new(&x, &podman, &project, Actor::current(), Correlation::new());
    let cut = rt().block_on(async {
        tokio::time::timeout(
            Duration::from_secs(3),
            orch.up(
                &plan,
                &ProjectResources::default(),
                &opts(Duration::from_secs(600)),
            ),
        )
        .await
    });
    assert!(cut.is_err(), "the up must still be waiting when it is cut");
    let left = left_behind(&project);
    assert!(left.iter().any(|l| l.starts_with("container ")), "{left:?}");
    assert!(dir
        .path()
        .join(format!("state/journal/{project}.json"))
        .exists());

    let next = Orchestrator::new(&x, &podman, &project, Actor::current(), Correlation::new());
    let down = rt().block_on(next.down(&DownOptions::default())).unwrap();
    let recovered = down.recovered.expect("the journal was found");
    assert!(recovered.is_clean(), "{recovered:?}");
    assert!(
        recovered
            .removed
            .contains(&format!("container {project}-db-1")),
        "{recovered:?}"
    );
    assert_eq!(left_behind(&project), Vec::<String>::new());
    assert!(!dir
        .path()
        .join(format!("state/journal/{project}.json"))
        .exists());
}

/// Fails every backend call of an `up` of `services` in turn (a clean `up` first, to count
/// them). Whatever happens, nothing is left: a failed `up` rolled itself back, a finished one
/// is taken down. Returns (ups run with a fault, ups the fault failed).
fn sweep(
    x: &Executor,
    base: &str,
    services: impl Fn() -> Vec<ServiceInput> + Sync,
    resources: impl Fn(&str) -> ProjectResources + Sync,
) -> (usize, usize) {
    let counted = FaultyBackend::new(podman(), 0, Fault::Fail);
    let project = format!("{base}-0");
    let p = plan(x, &project, services());
    let o = Orchestrator::new(x, &counted, &project, Actor::current(), Correlation::new());
    rt().block_on(o.up(&p, &resources(&project), &opts(Duration::from_secs(60))))
        .unwrap_or_else(|e| panic!("{e}"));
    let calls = counted.calls();
    rt().block_on(o.down(&DownOptions {
        volumes: true,
        timeout: Some(Duration::from_secs(1)),
    }))
    .unwrap();
    assert!(calls >= 8, "{calls}");
    // Three faulted ups at a time, each its own project: the sweep stays within minutes, and
    // concurrent projects must not disturb each other's rollback either.
    let next = std::sync::atomic::AtomicUsize::new(1);
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let one = |k: usize| {
        let project = format!("{base}-{k}");
        let p = plan(x, &project, services());
        let faulty = FaultyBackend::new(podman(), k, Fault::Fail);
        let o = Orchestrator::new(x, &faulty, &project, Actor::current(), Correlation::new());
        match rt().block_on(o.up(&p, &resources(&project), &opts(Duration::from_secs(60)))) {
            Err(e) => {
                failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let rb = e
                    .rollback
                    .as_ref()
                    .unwrap_or_else(|| panic!("{base}: fault {k}: {e}"));
                assert!(rb.is_clean(), "{base}: fault {k}: {rb:?}");
            }
            Ok(_) => {
                // The fault hit a health probe, which a later probe made up for, or this up
                // needed fewer probes than the counted one: take it down on a clean backend.
                let clean = podman();
                let o =
                    Orchestrator::new(x, &clean, &project, Actor::current(), Correlation::new());
                rt().block_on(o.down(&DownOptions {
                    volumes: true,
                    timeout: Some(Duration::from_secs(1)),
                }))
                .unwrap();
            }
        }
        assert_eq!(
            left_behind(&project),
            Vec::<String>::new(),
            "{base}: fault at call {k}"
        );
    };
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if k > calls {
                    return;
                }
                one(k);
            });
        }
    });
    let failed = failed.into_inner();
    assert!(
        failed * 2 >= calls,
        "{base}: only {failed} of {calls} faults failed the up"
    );
    (calls, failed)
}

/// 100+ fault-injected `up`s: the backend fails at every call of an `up` in turn, over four
/// shapes (app <- db; the whole stack on an internal project network with a declared volume;
/// app ×3 <- db ×2 on that network; proxy ×2 <- app ×9 <- db ×4), three at a time, plus real
/// container crashes. Nothing is ever left behind.
#[test]
fn faults_at_every_backend_call_and_a_crashing_service_leave_nothing() {
    let (_dir, x) = executor();
    let small = || {
        let mut s = stack("test -f /tmp/ready", 50);
        s.remove(0); // app <- db: the fewest calls that still cover every kind of resource
        s
    };
    let (small_ups, _) = sweep(&x, &unique("fault"), small, |_| ProjectResources::default());
    let networked = || {
        let mut s = stack("test -f /tmp/ready", 50);
        for svc in &mut s {
            svc.shape.networks.push(NetworkUse {
                network: "backend".into(),
                aliases: Vec::new(),
            });
        }
        s
    };
    let declared = |project: &str| ProjectResources {
        networks: [(
            "backend".to_string(),
            NetworkDecl {
                name: format!("{project}_backend"),
                internal: true,
                external: false,
                labels: Default::default(),
            },
        )]
        .into_iter()
        .collect(),
        volumes: [(
            "pgdata".to_string(),
            VolumeDecl {
                name: format!("{project}_pgdata"),
                external: false,
                labels: Default::default(),
            },
        )]
        .into_iter()
        .collect(),
    };
    let (stack_ups, _) = sweep(&x, &unique("faultnet"), networked, declared);
    // Replicas: three app and two db containers, each created, started and probed.
    let replicated = || {
        let mut s = networked();
        s.remove(0);
        for svc in &mut s {
            svc.shape.replicas = if svc.ask.name == "app" { 3 } else { 2 };
        }
        s
    };
    let (replica_ups, _) = sweep(&x, &unique("faultrep"), replicated, declared);
    // Wider: nine app, four db and two proxy containers.
    let wide = || {
        let mut s = networked();
        for svc in &mut s {
            svc.shape.replicas = match svc.ask.name.as_str() {
                "app" => 9,
                "db" => 4,
                _ => 2,
            };
        }
        s
    };
    let (wide_ups, _) = sweep(&x, &unique("faultwide"), wide, declared);
    let total = small_ups + stack_ups + replica_ups + wide_ups;
    assert!(total >= 100, "only {total} fault-injected ups");

    // A one-shot that crashes fails its dependent's `service_completed_successfully`.
    let project = unique("crash");
    let services = vec![
        service("db", "echo migrating; exit 3", None, &[]),
        service(
            "app",
            "exec sleep 600",
            None,
            &[("db", Condition::CompletedSuccessfully)],
        ),
    ];
    let p = plan(&x, &project, services);
    let podman = podman();
    let o = Orchestrator::new(&x, &podman, &project, Actor::current(), Correlation::new());
    let e = rt()
        .block_on(o.up(
            &p,
            &ProjectResources::default(),
            &opts(Duration::from_secs(60)),
        ))
        .unwrap_err();
    assert!(e.to_string().contains("exited with status 3"), "{e}");
    assert!(
        matches!(&e.cause, OrchestrateError::Service { service, .. } if service == "db"),
        "{e}"
    );
    assert_eq!(left_behind(&project), Vec::<String>::new());
}
