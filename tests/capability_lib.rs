//! The library's host-program contract, in-process: `perry_container_run_capability` and
//! `Capabilities::run_capability` against a capability image signed by the loopback sigstore
//! stack, with the audit log a reviewer would read.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use perry_audit::{AuditLog, LogOptions};
use perry_sandbox::capability::{
    perry_container_run_capability, Capabilities, CapabilityRequest, ContainerGrants,
};
use perry_sandbox::exec::Executor;
use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};

struct World {
    _reg: Registry,
    dir: tempfile::TempDir,
    caps: Capabilities,
}

fn world() -> World {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = reg.host();
    let pushed = reg.push_image(
        "lib/busybox",
        "v1",
        &TinyImage::busybox_marked("amd64", "lib"),
    );
    SigStack::shared().sign(&reg, "lib/busybox", &pushed.digest, &SignOptions::default());
    reg.push_image(
        "lib/unsigned",
        "v1",
        &TinyImage::busybox_marked("amd64", "lib-unsigned"),
    );
    let extra = format!(
        r#"
[shellCapabilities.echo]
command = ["echo"]
args = {{ max = 2 }}
image = "{host}/lib/busybox:v1"

[shellCapabilities.fail]
command = ["cat", "/nonexistent"]
image = "{host}/lib/busybox:v1"

[shellCapabilities.unsigned]
command = ["echo", "ran"]

[shellCapabilityImages]
unsigned = "{host}/lib/unsigned:v1"
"#
    );
    let path = ConfigBuilder::new(&reg, SigStack::shared())
        .extra(&extra)
        .write(dir.path());
    let config = perry_policies::Config::load(&path).unwrap();
    let audit = Arc::new(AuditLog::open(LogOptions::from_config(&config)).unwrap());
    let executor = Executor::new(config, audit).unwrap();
    World {
        _reg: reg,
        dir,
        caps: Capabilities::new(Arc::new(executor)),
    }
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn records(w: &World) -> Vec<serde_json::Value> {
    std::fs::read_to_string(w.dir.path().join("state/audit/log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_contract_runs_named_commands_and_refuses_everything_else() {
    let w = world();
    let caps = &w.caps;
    let host = w._reg.host();

    let logs = perry_container_run_capability(
        caps,
        "echo",
        "",
        &argv(&["echo", "hi", "there"]),
        ContainerGrants::default(),
    )
    .await
    .unwrap();
    assert_eq!(logs.stdout, "hi there\n");
    assert_eq!(logs.exit_code, 0);

    // The configured image's repository under another tag is accepted (the configured
    // reference runs, verified as always).
    let logs = perry_container_run_capability(
        caps,
        "echo",
        &format!("{host}/lib/busybox:other"),
        &argv(&["echo", "again"]),
        ContainerGrants::default(),
    )
    .await
    .unwrap();
    assert_eq!(logs.stdout, "again\n");

    // The command's own failure is its status, with stderr.
    let logs = perry_container_run_capability(
        caps,
        "fail",
        "",
        &argv(&["cat", "/nonexistent"]),
        ContainerGrants::default(),
    )
    .await
    .unwrap();
    assert_eq!(logs.exit_code, 1, "{logs:?}");
    assert!(logs.stderr.contains("/nonexistent"), "{logs:?}");

    // Refusals: a command that is not the capability's, another image, too many arguments,
    // an unknown capability.
    let before = records(&w)
        .iter()
        .filter(|r| r["decision"] == "allow" && r["action"] == "capability")
        .count();
    let e = perry_container_run_capability(
        caps,
        "echo",
        "",
        &argv(&["sh", "-c", "id"]),
        ContainerGrants::default(),
    )
    .await
    .unwrap_err();
    assert_eq!((e.code.as_str(), e.status), ("argument_denied", 400), "{e}");
    assert!(e.message.contains("must start with"), "{e}");
    let e = perry_container_run_capability(
        caps,
        "echo",
        &format!("{host}/lib/unsigned:v1"),
        &argv(&["echo", "x"]),
        ContainerGrants::default(),
    )
    .await
    .unwrap_err();
    assert_eq!((e.code.as_str(), e.status), ("policy_denied", 403), "{e}");
    let e = perry_container_run_capability(
        caps,
        "echo",
        "",
        &argv(&["echo", "a", "b", "c"]),
        ContainerGrants::default(),
    )
    .await
    .unwrap_err();
    assert_eq!((e.code.as_str(), e.status), ("argument_denied", 400), "{e}");
    assert!(e.message.contains("args.max = 2"), "{e}");
    let e = perry_container_run_capability(
        caps,
        "ech",
        "",
        &argv(&["echo"]),
        ContainerGrants::default(),
    )
    .await
    .unwrap_err();
    assert_eq!((e.code.as_str(), e.status), ("not_found", 404), "{e}");
    assert!(e.message.contains("echo, fail, unsigned"), "{e}");
    let after = records(&w)
        .iter()
        .filter(|r| r["decision"] == "allow" && r["action"] == "capability")
        .count();
    assert_eq!(before, after, "a refused call was allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_verification_creates_nothing() {
    let w = world();
    let e = w
        .caps
        .run_capability("unsigned", CapabilityRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code().as_str(), "verification_failed", "{e}");
    assert_eq!(e.status(), 403);
    // Nothing pulled, nothing unpacked, no allow record; the denial is recorded.
    let rootfs = w.dir.path().join("state/rootfs");
    assert_eq!(
        std::fs::read_dir(&rootfs).map(|d| d.count()).unwrap_or(0),
        0
    );
    let recs = records(&w);
    assert!(recs
        .iter()
        .all(|r| !(r["action"] == "capability" && r["decision"] == "allow")));
    let deny = recs
        .iter()
        .find(|r| r["action"] == "capability" && r["decision"] == "deny")
        .expect("a deny record");
    assert!(deny["subject"]["image"]
        .as_str()
        .unwrap()
        .contains("lib/unsigned"));
}
