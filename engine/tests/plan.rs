//! Planning against the real loopback world: images signed by the sigstore-js stack in a real
//! docker-registry, verified through the executor. A plan is all or nothing, and every decision
//! is on the audit log before anything could be created.

use std::sync::{Arc, OnceLock};

use perry_audit::{Actor, AuditLog, Correlation, LogOptions};
use perry_engine::plan::{Condition, DependsOn, PlanRefused, ServiceAsk, ServiceInput};
use perry_engine::{Executor, Platform};
use perry_policies::Tier;
use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};

/// One registry with signed `stack/{proxy,app,db}` and an unsigned `stack/rogue`, shared by the
/// binary's tests; one executor per test (its own audit log).
fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let reg = Registry::start();
        for name in ["proxy", "app", "db"] {
            let repo = format!("stack/{name}");
            let pushed = reg.push_image(&repo, "v1", &TinyImage::busybox_marked("amd64", name));
            SigStack::shared().sign(&reg, &repo, &pushed.digest, &SignOptions::default());
        }
        reg.push_image(
            "stack/rogue",
            "v1",
            &TinyImage::busybox_marked("amd64", "rogue"),
        );
        reg
    })
}

fn executor() -> (tempfile::TempDir, Executor, Arc<AuditLog>) {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let path = ConfigBuilder::new(reg, SigStack::shared()).write(dir.path());
    let config = perry_policies::Config::load(&path).unwrap();
    let audit = Arc::new(AuditLog::open(LogOptions::from_config(&config)).unwrap());
    let executor = Executor::new(config, audit.clone()).unwrap();
    (dir, executor, audit)
}

fn service(name: &str, repo: &str, deps: &[(&str, Condition)]) -> ServiceInput {
    ServiceInput {
        ask: ServiceAsk {
            name: name.into(),
            image: Some(format!("{}/{repo}:v1", registry().host())),
            ..Default::default()
        },
        shape: Default::default(),
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

fn stack() -> Vec<ServiceInput> {
    vec![
        service("proxy", "stack/proxy", &[("app", Condition::Healthy)]),
        service("app", "stack/app", &[("db", Condition::Healthy)]),
        service("db", "stack/db", &[]),
    ]
}

fn records(dir: &tempfile::TempDir) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.path().join("state/audit/log.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Plans `services` as project `shop`, expecting a refusal.
fn refused_plan(x: &Executor, services: Vec<ServiceInput>) -> PlanRefused {
    rt().block_on(x.plan(
        "shop",
        services,
        &Platform::default(),
        Actor::current(),
        &Correlation::new(),
    ))
    .unwrap_err()
}

#[test]
fn a_signed_stack_plans_pinned_levelled_and_on_the_record() {
    let (dir, x, _log) = executor();
    let id = Correlation::new();
    let plan = rt()
        .block_on(x.plan("shop", stack(), &Platform::default(), Actor::current(), &id))
        .unwrap();
    let levels: Vec<Vec<&str>> = plan
        .levels
        .iter()
        .map(|l| l.iter().map(|&n| plan.graph.name(n)).collect())
        .collect();
    assert_eq!(levels, [vec!["db"], vec!["app"], vec!["proxy"]]);
    for (_, name, s) in plan.graph.nodes() {
        assert_eq!(s.tier, Tier::Hardened, "{name}");
        let pinned = s.verification.image.pinned_reference();
        assert!(pinned.contains("@sha256:"), "{pinned}");
        assert!(pinned.contains(&format!("stack/{name}")), "{pinned}");
    }
    let recs = records(&dir);
    let plan_rec = recs
        .iter()
        .find(|r| r["action"] == "plan")
        .expect("a plan record");
    assert_eq!(plan_rec["decision"], "allow");
    assert_eq!(plan_rec["correlation"], id.as_str());
    assert_eq!(plan_rec["details"]["services"].as_array().unwrap().len(), 3);
    // Each image's verification is recorded before the plan, under the same correlation.
    let verified: Vec<_> = recs
        .iter()
        .filter(|r| r["action"] == "verify" && r["correlation"] == id.as_str())
        .collect();
    assert_eq!(verified.len(), 3, "{verified:?}");
    assert!(verified
        .iter()
        .all(|r| r["seq"].as_u64() < plan_rec["seq"].as_u64()));
}

#[test]
fn services_sharing_an_image_are_pinned_to_one_verification_of_it() {
    let (dir, x, _log) = executor();
    let id = Correlation::new();
    let mut services = vec![service("db", "stack/db", &[])];
    for n in 1..=4 {
        services.push(service(
            &format!("app{n}"),
            "stack/app",
            &[("db", Condition::Healthy)],
        ));
    }
    let plan = rt()
        .block_on(x.plan(
            "shop",
            services,
            &Platform::default(),
            Actor::current(),
            &id,
        ))
        .unwrap();
    let pins: std::collections::BTreeSet<String> = plan
        .graph
        .nodes()
        .filter(|(_, name, _)| name.starts_with("app"))
        .map(|(_, _, s)| s.verification.image.pinned_reference())
        .collect();
    assert_eq!(pins.len(), 1, "{pins:?}");
    // One tag resolution and verification per image, not per service.
    let verified = records(&dir)
        .into_iter()
        .filter(|r| r["action"] == "verify" && r["correlation"] == id.as_str())
        .count();
    assert_eq!(verified, 2);
}

#[test]
fn with_several_refused_images_the_first_service_in_the_file_is_named() {
    // The images are verified at once; the refusal must not depend on which answers first
    // or on how the references sort (`stack/ghost` < `stack/rogue`).
    for (order, first) in [(["ghost", "rogue"], "ghost"), (["rogue", "ghost"], "rogue")] {
        let (_dir, x, _log) = executor();
        let mut services = stack();
        for name in order {
            services.push(service(name, &format!("stack/{name}"), &[]));
        }
        let e = refused_plan(&x, services);
        assert!(
            matches!(&e, PlanRefused::Image { service, .. } if service == first),
            "{order:?}: {e}"
        );
    }
}

#[test]
fn one_unsigned_service_refuses_the_whole_plan() {
    let (dir, x, _log) = executor();
    let mut services = stack();
    services.push(service("rogue", "stack/rogue", &[]));
    let e = refused_plan(&x, services);
    assert!(
        matches!(&e, PlanRefused::Image { service, .. } if service == "rogue"),
        "{e}"
    );
    assert_eq!(e.code().as_str(), "verification_failed");
    assert!(e.to_string().starts_with("services.rogue.image: "), "{e}");
    let recs = records(&dir);
    let denied: Vec<_> = recs.iter().filter(|r| r["action"] == "plan").collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["decision"], "deny");
    assert_eq!(denied[0]["details"]["code"], "verification_failed");
}

#[test]
fn a_loosening_field_or_a_cycle_is_refused_before_any_registry_is_asked() {
    let (dir, x, _log) = executor();
    let mut services = stack();
    services[1].ask.privileged = true;
    services[2].ask.build = true;
    let e = refused_plan(&x, services);
    let PlanRefused::Policy(refusals) = &e else {
        panic!("{e}")
    };
    let fields: Vec<String> = refusals
        .iter()
        .map(|r| format!("{}.{}", r.service, r.field))
        .collect();
    assert_eq!(fields, ["app.privileged", "db.build"]);
    assert_eq!(e.code().status(), 403);

    let mut cyclic = stack();
    cyclic[2].depends_on.push(DependsOn {
        service: "proxy".into(),
        condition: Condition::Started,
        required: true,
        restart: false,
    });
    let e = rt()
        .block_on(x.plan(
            "shop",
            cyclic,
            &Platform::default(),
            Actor::current(),
            &Correlation::new(),
        ))
        .unwrap_err();
    assert_eq!(e.code().as_str(), "dependency_cycle");
    assert_eq!(e.code().status(), 422);
    assert!(e.to_string().contains("proxy -> app -> db -> proxy"), "{e}");
    // Neither plan verified anything: no registry round trip for a plan refused on its face.
    let recs = records(&dir);
    assert!(recs.iter().all(|r| r["action"] != "verify"), "{recs:?}");
    assert_eq!(
        recs.iter()
            .filter(|r| r["action"] == "plan" && r["decision"] == "deny")
            .count(),
        2
    );
}
