//! `perry-sandbox cap` end to end, all real and on loopback: the example config's
//! `[shellCapabilities.*]` sections, taken from `perryconfig.example.toml` as written, run against
//! images made from the host's Debian `git` and `jq` (with their shared libraries) and static
//! busybox, pushed to docker-registry and signed by sigstore-js through the mock
//! Fulcio/Rekor/TSA — verified, pulled by digest, unpacked and run in the native sandbox.
//!
//! Refusals — a broken argument rule, a workspace outside `[sandbox] workspace_roots`, an unknown
//! capability, an image that fails verification — exit 125 with an error naming the rule or field,
//! and nothing runs: no allow record is written (the allow record precedes every run), a writable
//! witness mount stays empty, and a refused image is never unpacked.
//!
//! The images' repositories mirror the example's: `cgr.dev/chainguard/git:latest` in the example
//! is `127.0.0.1:PORT/chainguard/git:latest` here, so the test follows the example's choices.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;
use perry_testworld::{
    host_architecture, ConfigBuilder, HostImage, Registry, SigStack, SignOptions, TinyImage,
};
use serde_json::Value;

/// The example configuration, as shipped.
const EXAMPLE: &str = include_str!("../perryconfig.example.toml");
/// The registry the example's images come from; mirrored on the loopback registry.
const EXAMPLE_REGISTRY: &str = "cgr.dev/";

/// One registry for the whole test process, holding the signed images the example names (under
/// the same repository paths) and an unsigned busybox.
struct Images {
    reg: Registry,
    /// Repository (`chainguard/git`) -> the digest pushed and signed at `:latest`.
    signed: Vec<(String, String)>,
    /// `perry/unsigned:v1`, pushed and never signed.
    unsigned: String,
}

fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let reg = Registry::start();
        let stack = SigStack::shared();
        let built = [
            (
                "chainguard/git",
                HostImage::new("git")
                    .binary("/usr/bin/git")
                    .busybox()
                    .build(),
            ),
            (
                "chainguard/jq",
                HostImage::new("jq").binary("/usr/bin/jq").busybox().build(),
            ),
            (
                "chainguard/busybox",
                TinyImage::busybox_marked(host_architecture(), "cap-busybox"),
            ),
        ];
        let mut signed = Vec::new();
        for (repo, image) in built {
            let pushed = reg.push_image(repo, "latest", &image);
            stack.sign(&reg, repo, &pushed.digest, &SignOptions::default());
            signed.push((repo.to_string(), pushed.digest));
        }
        let unsigned = reg
            .push_image(
                "perry/unsigned",
                "v1",
                &TinyImage::busybox_marked(host_architecture(), "cap-unsigned"),
            )
            .digest;
        Images {
            reg,
            signed,
            unsigned,
        }
    })
}

impl Images {
    /// The digest signed for `repo`.
    fn digest(&self, repo: &str) -> &str {
        self.signed
            .iter()
            .find(|(r, _)| r == repo)
            .map(|(_, d)| d.as_str())
            .unwrap_or_else(|| panic!("no signed image for {repo}"))
    }

    /// The loopback reference for an image the example names (`cgr.dev/x/y:t` -> `HOST/x/y:t`).
    fn mirror(&self, example_ref: &str) -> String {
        let path = example_ref
            .strip_prefix(EXAMPLE_REGISTRY)
            .unwrap_or_else(|| {
                panic!("the example names {example_ref}; the test mirrors only {EXAMPLE_REGISTRY}…")
            });
        let repo = path.split(':').next().unwrap();
        assert!(
            self.signed.iter().any(|(r, _)| r == repo),
            "the example names {example_ref}: add an image for {repo} to images()"
        );
        format!("{}/{path}", self.reg.host())
    }
}

/// The example's `[shellCapabilities.*]` and `[shellCapabilityImages]` with every image pointed
/// at the loopback mirror, as TOML; `extra_images` are added to (or replace entries of)
/// `[shellCapabilityImages]`.
fn capabilities_toml(extra_images: &[(&str, String)]) -> String {
    let imgs = images();
    let example: toml::Table = toml::from_str(EXAMPLE).expect("perryconfig.example.toml parses");
    let mut caps = example
        .get("shellCapabilities")
        .and_then(|c| c.as_table())
        .expect("the example has [shellCapabilities.*]")
        .clone();
    for (_, cap) in caps.iter_mut() {
        let cap = cap.as_table_mut().expect("a capability is a table");
        if let Some(image) = cap.get("image").and_then(|i| i.as_str()) {
            let mirrored = imgs.mirror(image);
            cap.insert("image".into(), mirrored.into());
        }
    }
    let mut cap_images = example
        .get("shellCapabilityImages")
        .and_then(|c| c.as_table())
        .cloned()
        .unwrap_or_default();
    for (_, image) in cap_images.iter_mut() {
        *image = imgs
            .mirror(image.as_str().expect("an image is a string"))
            .into();
    }
    for (name, image) in extra_images {
        cap_images.insert(name.to_string(), image.clone().into());
    }
    let mut out = toml::Table::new();
    out.insert("shellCapabilities".into(), caps.into());
    out.insert("shellCapabilityImages".into(), cap_images.into());
    toml::to_string(&out).expect("toml")
}

/// Capabilities of this test only: `touch /out/ran [NAME]` on a writable workspace mount, to
/// prove whether anything ran. `witness` runs from the signed busybox, `witness-unsigned` from an
/// image nobody signed; `witness-ro` mounts the workspace read-only (the default).
fn witness_toml(imgs: &Images) -> String {
    let busybox = format!("{}/chainguard/busybox:latest", imgs.reg.host());
    let unsigned = format!("{}/perry/unsigned:v1", imgs.reg.host());
    let mut out = String::new();
    for (name, image, mount) in [
        ("witness", &busybox, ", read_only = false"),
        ("witness-unsigned", &unsigned, ", read_only = false"),
        ("witness-ro", &busybox, ""),
    ] {
        out.push_str(&format!(
            r#"
[shellCapabilities.{name}]
description = "Write a witness file into the workspace"
command = ["touch", "/out/ran"]
args = {{ max = 1, pattern = "[a-z]{{1,8}}", deny = ["bad"] }}
workdir = "/out"
image = "{image}"
mounts = [{{ source = "{{workspace}}", target = "/out"{mount} }}]
timeout = "10s"
"#
        ));
    }
    out
}

/// One test's directory: config, state, workspace root and workspaces.
struct World {
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn mkdir(p: &Path, mode: u32) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl World {
    fn new() -> Self {
        Self::with_images(&[])
    }

    /// A world whose `[shellCapabilityImages]` also holds `extra_images`.
    fn with_images(extra_images: &[(&str, String)]) -> Self {
        let imgs = images();
        let dir = tempfile::tempdir().unwrap();
        // The sandbox runs as an unprivileged host uid: the rootfs's and workspaces' ancestors
        // need o+x.
        mkdir(dir.path(), 0o755);
        let root = dir.path().join("workspaces");
        mkdir(&root, 0o755);
        let text = ConfigBuilder::new(&imgs.reg, SigStack::shared())
            .extra(&capabilities_toml(extra_images))
            .extra(&witness_toml(imgs))
            .render(&dir.path().join("state"));
        // [sandbox] is written by ConfigBuilder; the workspace root goes into it.
        let roots = format!(
            "[sandbox]\nworkspace_roots = [{}]\n",
            serde_json::to_string(&root.display().to_string()).unwrap()
        );
        assert!(text.contains("[sandbox]\n"), "{text}");
        let text = text.replacen("[sandbox]\n", &roots, 1);
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        let config = dir.path().join("perryconfig.toml");
        std::fs::write(&config, text).unwrap();
        Self { dir, config }
    }

    /// The allowed workspace root.
    fn root(&self) -> PathBuf {
        self.dir.path().join("workspaces")
    }

    /// A new workspace `name` under the root, readable by the sandbox's uid.
    fn workspace(&self, name: &str) -> PathBuf {
        let ws = self.root().join(name);
        mkdir(&ws, 0o755);
        ws
    }

    /// A world-writable workspace for the witness capabilities.
    fn witness(&self, name: &str) -> PathBuf {
        let ws = self.root().join(name);
        mkdir(&ws, 0o777);
        ws
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::cargo_bin("perry-sandbox")
            .unwrap()
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("PERRY_CONFIG")
            .timeout(std::time::Duration::from_secs(120))
            .output()
            .unwrap()
    }

    /// `cap run NAME [--workspace WS] -- ARGS`.
    fn cap_run(&self, name: &str, ws: Option<&Path>, args: &[&str]) -> std::process::Output {
        let mut a = vec!["cap".to_string(), "run".into(), name.into()];
        if let Some(ws) = ws {
            a.push("--workspace".into());
            a.push(ws.display().to_string());
        }
        a.push("--".into());
        a.extend(args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        self.cli(&a)
    }

    /// Every audit record, in order (none before the first invocation).
    fn audit(&self) -> Vec<Value> {
        let path = self.dir.path().join("state/audit/log.jsonl");
        let log = match std::fs::read_to_string(&path) {
            Ok(log) => log,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("{}: {e}", path.display()),
        };
        log.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Audit records of action `capability`.
    fn cap_records(&self) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|r| r["action"] == "capability")
            .collect()
    }

    /// Directories unpacked under `state/rootfs` (manifest digests, hex).
    fn unpacked(&self) -> Vec<String> {
        match std::fs::read_dir(self.dir.path().join("state/rootfs")) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Host git for building the test repository, isolated from the host's configuration.
fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("/usr/bin/git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Perry Test")
        .env("GIT_AUTHOR_EMAIL", "perry@example.invalid")
        .env("GIT_COMMITTER_NAME", "Perry Test")
        .env("GIT_COMMITTER_EMAIL", "perry@example.invalid")
        .output()
        .expect("/usr/bin/git (Debian git; scripts/test installs it)");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
}

/// The record's field at a top-level key or under `subject`.
fn field<'a>(rec: &'a Value, key: &str) -> &'a Value {
    match &rec[key] {
        Value::Null => &rec["subject"][key],
        v => v,
    }
}

#[test]
fn example_capabilities_run_end_to_end() {
    let w = World::new();
    let imgs = images();

    // git-log on a real repository: the subjects of the commits, newest first.
    let repo = w.workspace("repo");
    git(&repo, &["init", "-q", "-b", "main"]);
    for (i, subject) in ["first: add readme", "second: fix typo", "third: ship it"]
        .iter()
        .enumerate()
    {
        std::fs::write(repo.join("README"), format!("v{i}\n")).unwrap();
        git(&repo, &["add", "README"]);
        git(&repo, &["commit", "-q", "-m", subject]);
    }
    let out = w.cap_run("git-log", Some(&repo), &["-n5"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let subjects: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_once(' ').expect("`<hash> <subject>`").1)
        .collect();
    assert_eq!(
        subjects,
        ["third: ship it", "second: fix typo", "first: add readme"],
        "{stdout}"
    );
    // -n2: the argument reaches git.
    let out = w.cap_run("git-log", Some(&repo), &["-n2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        2,
        "{}",
        text(&out.stdout)
    );

    // jq over a file of the workspace.
    let data = w.workspace("data");
    std::fs::write(data.join("f.json"), r#"{"a": {"b": [1, 2]}, "c": "x"}"#).unwrap();
    let out = w.cap_run("jq", Some(&data), &[".a", "f.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"b": [1, 2]}));
    let out = w.cap_run("jq", Some(&data), &[".a.b | length", "f.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "2\n");
    mkdir(&data.join("sub"), 0o755);
    std::fs::write(data.join("sub/g.json"), r#"{"a": "deep"}"#).unwrap();
    let out = w.cap_run("jq", Some(&data), &[".a", "sub/g.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "\"deep\"\n");

    // ls of the workspace (busybox `ls -la`).
    let tree = w.workspace("tree");
    std::fs::write(tree.join("notes.txt"), "hello\n").unwrap();
    mkdir(&tree.join("src"), 0o755);
    std::fs::write(tree.join("src/main.rs"), "fn main() {}\n").unwrap();
    let out = w.cap_run("ls", Some(&tree), &["."]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.lines().any(|l| l.ends_with(" notes.txt")),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l.ends_with(" src")), "{stdout}");
    let out = w.cap_run("ls", Some(&tree), &["src"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("main.rs"),
        "{}",
        text(&out.stdout)
    );
    // A symlink inside the workspace to a host directory resolves inside the sandbox, where that
    // host path does not exist: the host directory's contents stay out of reach.
    let secret = w.dir.path().join("secret");
    mkdir(&secret, 0o755);
    std::fs::write(secret.join("secret.txt"), "s3cret\n").unwrap();
    std::os::unix::fs::symlink(&secret, tree.join("docs")).unwrap();
    let out = w.cap_run("ls", Some(&tree), &["docs"]);
    let listing = text(&out.stdout) + &text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{listing}");
    assert!(
        listing.contains(&format!("docs -> {}", secret.display())),
        "{listing}"
    );
    assert!(!listing.contains("secret.txt"), "{listing}");

    // A read-only mount (the default) stays unwritten, even when the host directory is 0777.
    let ro = w.witness("ro");
    let out = w.cap_run("witness-ro", Some(&ro), &["x"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Read-only file system"),
        "{}",
        text(&out.stderr)
    );
    assert!(std::fs::read_dir(&ro).unwrap().next().is_none());

    // The host's environment never reaches the command: jq's `env` is the image's PATH only.
    let out = Command::cargo_bin("perry-sandbox")
        .unwrap()
        .arg("--config")
        .arg(&w.config)
        .args(["cap", "run", "jq", "--workspace"])
        .arg(&data)
        .args(["--", "env", "f.json"])
        .env_remove("PERRY_CONFIG")
        .env("PERRY_CAP_TEST_SECRET", "leaked")
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let env: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        env,
        serde_json::json!({"PATH": "/usr/local/bin:/usr/bin:/bin"}),
        "{env}"
    );

    // The command's own status comes back (not 125): git in a directory that is no repository.
    let plain = w.workspace("plain");
    let out = w.cap_run("git-log", Some(&plain), &["-n1"]);
    assert_eq!(out.status.code(), Some(128), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("not a git repository"),
        "{}",
        text(&out.stderr)
    );
    let out = w.cap_run("jq", Some(&data), &[".a", "missing.json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // --json: the outcome names the capability, the image as configured and the digest that ran.
    let out = w.cli(&[
        "--json",
        "cap",
        "run",
        "jq",
        "--workspace",
        data.to_str().unwrap(),
        "--",
        ".c",
        "f.json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["capability"], "jq");
    assert_eq!(v["stdout"], "\"x\"\n");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["image_digest"], imgs.digest("chainguard/jq"));
    // jq ran before in this state directory: verification came from the cache.
    assert_eq!(v["cache_hit"], true, "{v}");
    assert_eq!(
        v["image"],
        format!("{}/chainguard/jq:latest", imgs.reg.host())
    );

    // Every run has an allow record with action `capability`, the capability and the digest.
    let allows: Vec<Value> = w
        .cap_records()
        .into_iter()
        .filter(|r| r["decision"] == "allow")
        .collect();
    let expect = [
        ("git-log", "chainguard/git"),
        ("git-log", "chainguard/git"),
        ("jq", "chainguard/jq"),
        ("jq", "chainguard/jq"),
        ("jq", "chainguard/jq"),
        ("ls", "chainguard/busybox"),
        ("ls", "chainguard/busybox"),
        ("ls", "chainguard/busybox"),
        ("witness-ro", "chainguard/busybox"),
        ("jq", "chainguard/jq"),
        ("git-log", "chainguard/git"),
        ("jq", "chainguard/jq"),
        ("jq", "chainguard/jq"),
    ];
    assert_eq!(allows.len(), expect.len(), "{allows:#?}");
    for (rec, (cap, repo)) in allows.iter().zip(expect) {
        assert_eq!(field(rec, "capability"), cap, "{rec}");
        assert_eq!(field(rec, "digest"), imgs.digest(repo), "{rec}");
    }
    assert_eq!(
        w.cap_records().len(),
        expect.len(),
        "only allow records: {:#?}",
        w.cap_records()
    );
    // Each image was unpacked once, under its manifest digest.
    let mut unpacked = w.unpacked();
    unpacked.sort();
    let mut want: Vec<String> = ["chainguard/git", "chainguard/jq", "chainguard/busybox"]
        .iter()
        .map(|r| imgs.digest(r).trim_start_matches("sha256:").to_string())
        .collect();
    want.sort();
    assert_eq!(unpacked, want);
}

/// A refusal: exit 125, the error's code and every `needles` on stderr, nothing on stdout, and
/// exactly one new audit decision (besides the CLI's `config_load` record): a `capability` deny
/// naming the capability, with the reason.
fn assert_refused(
    w: &World,
    name: &str,
    ws: Option<&Path>,
    args: &[&str],
    code: &str,
    needles: &[&str],
) {
    let before = w.audit().len();
    let out = w.cap_run(name, ws, args);
    let stderr = text(&out.stderr);
    let case = format!("cap run {name} {ws:?} -- {args:?}");
    assert_eq!(out.status.code(), Some(125), "{case}: {stderr}");
    assert!(out.stdout.is_empty(), "{case}: {}", text(&out.stdout));
    assert!(
        stderr.starts_with(&format!("perry-sandbox: error[{code}]: ")),
        "{case}: {stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "{case}: {n:?} not in {stderr}");
    }
    let audit = w.audit();
    let new: Vec<&Value> = audit[before..]
        .iter()
        .filter(|r| r["action"] != "config_load")
        .collect();
    assert_eq!(new.len(), 1, "{case}: {new:#?}");
    let rec = &new[0];
    assert_eq!(rec["action"], "capability", "{case}: {rec}");
    assert_eq!(rec["decision"], "deny", "{case}: {rec}");
    assert_eq!(field(rec, "capability"), name, "{case}: {rec}");
    let reason = rec["reason"].as_str().unwrap_or_default();
    for n in needles {
        assert!(reason.contains(n), "{case}: {n:?} not in the reason: {rec}");
    }
}

#[test]
fn rule_breaking_arguments_and_bad_workspaces_exit_125_and_run_nothing() {
    let w = World::new();
    let repo = w.workspace("repo");
    git(&repo, &["init", "-q"]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "only"]);
    let data = w.workspace("data");
    std::fs::write(data.join("f.json"), r#"{"a": 1}"#).unwrap();
    let tree = w.workspace("tree");
    let witness = w.witness("witness");

    // The witness works: an allowed run writes into it (and is the only run in this test).
    let out = w.cap_run("witness", Some(&witness), &["hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(witness.join("ran").exists() && witness.join("hello").exists());
    std::fs::remove_file(witness.join("ran")).unwrap();
    std::fs::remove_file(witness.join("hello")).unwrap();
    let allows_before = w.cap_records().len();
    let unpacked_before = w.unpacked();

    let args = "argument_denied";
    // git-log: one argument, -n<digits>, and git's dangerous options are denied by name.
    for (a, needles) in [
        (
            &["-c", "core.pager=x"][..],
            &["capability `git-log`", "rule: args.max = 1"][..],
        ),
        (&["-ccore.pager=x"], &["args.deny contains `-c`"]),
        (
            &["--upload-pack=x"],
            &["args.deny contains `--upload-pack`"],
        ),
        (&["--output=/work/x"], &["args.deny contains `--output`"]),
        (&["-n5;id"], &["does not match args.pattern `-n[0-9]{1,3}`"]),
        (&["-n1000"], &["does not match args.pattern"]),
        (&["--all"], &["does not match args.pattern"]),
    ] {
        assert_refused(&w, "git-log", Some(&repo), a, args, needles);
    }
    // jq: FILTER FILE, with file-reading options denied even though they fit the filter pattern.
    for (a, needles) in [
        (&[".a", "f.json", "x"][..], &["rule: args.max = 2"][..]),
        (&[".a", "/etc/passwd"], &["args.positions[1].pattern"]),
        (&[".a", "../f.json"], &["args.positions[1].pattern"]),
        (
            &[".a", "data/../../etc/passwd"],
            &["args.positions[1].pattern"],
        ),
        (&[".a", "--seq"], &["args.positions[1].pattern"]),
        (&["$ENV", "f.json"], &["args.positions[0].pattern"]),
        (
            &["--rawfile", "f.json"],
            &["args.deny contains `--rawfile`"],
        ),
        (&["-L", "f.json"], &["args.deny contains `-L`"]),
    ] {
        assert_refused(&w, "jq", Some(&data), a, args, needles);
    }
    // ls: only the listed directories.
    for a in [&[".."][..], &["/"], &["src/../.."]] {
        assert_refused(
            &w,
            "ls",
            Some(&tree),
            a,
            args,
            &["args.positions[0].one_of"],
        );
    }
    assert_refused(
        &w,
        "ls",
        Some(&tree),
        &[".", "src"],
        args,
        &["args.max = 1"],
    );
    // The writable witness: denied and too many arguments leave it empty.
    assert_refused(
        &w,
        "witness",
        Some(&witness),
        &["bad"],
        args,
        &["args.deny contains `bad`"],
    );
    assert_refused(
        &w,
        "witness",
        Some(&witness),
        &["a", "b"],
        args,
        &["args.max = 1"],
    );

    // Workspaces: outside the roots, through a symlink out of the root, relative, missing, absent.
    let ws = "workspace_denied";
    let root = w.root();
    let outside = w.dir.path().join("outside");
    mkdir(&outside, 0o777);
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
    let not_under = "is not under an allowed workspace root";
    assert_refused(
        &w,
        "git-log",
        Some(Path::new("/etc")),
        &[],
        ws,
        &["workspace: /etc", not_under],
    );
    assert_refused(
        &w,
        "git-log",
        Some(&root.join("etc-link")),
        &[],
        ws,
        &["/etc ", not_under],
    );
    assert_refused(
        &w,
        "ls",
        Some(&root.join("repo/../../outside")),
        &["."],
        ws,
        &[not_under],
    );
    assert_refused(
        &w,
        "git-log",
        Some(Path::new("workspaces/repo")),
        &[],
        ws,
        &["is not an absolute path"],
    );
    assert_refused(
        &w,
        "git-log",
        Some(&root.join("missing")),
        &[],
        ws,
        &["missing"],
    );
    assert_refused(
        &w,
        "git-log",
        Some(&data.join("f.json")),
        &[],
        ws,
        &["is not a directory"],
    );
    assert_refused(
        &w,
        "git-log",
        None,
        &["-n1"],
        ws,
        &["the request must name one"],
    );
    // The witness through a symlink to a writable directory outside the root: nothing written.
    let escape = root.join("escape");
    assert_refused(
        &w,
        "witness",
        Some(&escape),
        &[],
        ws,
        &[&format!("{} {not_under}", outside.display())],
    );
    assert_refused(&w, "witness", Some(&outside), &[], ws, &[not_under]);
    // A sibling that merely shares the root's name as a prefix is not under it.
    let sibling = w.dir.path().join("workspaces-evil");
    mkdir(&sibling, 0o777);
    assert_refused(&w, "witness", Some(&sibling), &[], ws, &[not_under]);
    assert!(std::fs::read_dir(&sibling).unwrap().next().is_none());
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "a refused workspace was written to"
    );

    // Nothing ran, nothing new was verified or unpacked.
    assert!(
        std::fs::read_dir(&witness).unwrap().next().is_none(),
        "a refused invocation wrote to the witness"
    );
    let records = w.cap_records();
    assert_eq!(
        records.iter().filter(|r| r["decision"] == "allow").count(),
        1,
        "{records:#?}"
    );
    assert!(records.len() > allows_before);
    assert!(
        !w.audit()
            .iter()
            .skip(allows_before)
            .any(|r| r["action"] == "verify"),
        "a refused invocation reached the verifier"
    );
    assert_eq!(w.unpacked(), unpacked_before);
}

#[test]
fn unknown_capability_exits_125_with_a_did_you_mean() {
    let w = World::new();
    let repo = w.workspace("repo");
    assert_refused(
        &w,
        "git-lgo",
        Some(&repo),
        &["-n5"],
        "not_found",
        &["`git-lgo`", "did you mean `git-log`?"],
    );
    assert_refused(&w, "rm", None, &["-rf", "/"], "not_found", &["`rm`"]);
    // --json: the error as an object on stdout.
    let out = w.cli(&["--json", "cap", "run", "jqq", "--", ".a"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["code"], "not_found");
    assert_eq!(v["error"]["status"], 404);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("did you mean `jq`?"), "{msg}");
    // describe says the same.
    let out = w.cli(&["cap", "describe", "lss"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("did you mean `ls`?"),
        "{}",
        text(&out.stderr)
    );
    assert!(w.unpacked().is_empty());
    assert!(!w.cap_records().iter().any(|r| r["decision"] == "allow"));
}

#[test]
fn images_that_fail_verification_exit_125_and_are_never_unpacked() {
    let imgs = images();
    let unsigned_ref = format!("{}/perry/unsigned:v1", imgs.reg.host());
    let unsigned_repo = format!("{}/perry/unsigned", imgs.reg.host());
    let unsigned_hex = imgs.unsigned.trim_start_matches("sha256:").to_string();

    // The test's own capability from an unsigned image, on a writable witness.
    let w = World::new();
    let witness = w.witness("witness");
    let before = w.audit().len();
    let out = w.cap_run("witness-unsigned", Some(&witness), &["hello"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.starts_with("perry-sandbox: error[verification_failed]: capability `witness-unsigned`: no signature found")
            && stderr.contains(&unsigned_repo),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(&witness).unwrap().next().is_none(),
        "the unsigned image ran"
    );
    assert!(
        !w.unpacked().contains(&unsigned_hex),
        "an unverified image was unpacked"
    );
    let new: Vec<Value> = w
        .audit()
        .split_off(before)
        .into_iter()
        .filter(|r| r["action"] != "config_load")
        .collect();
    assert_eq!(new.len(), 1, "{new:#?}");
    assert_eq!(new[0]["action"], "capability");
    assert_eq!(new[0]["decision"], "deny", "{:?}", new[0]);
    assert_eq!(field(&new[0], "capability"), "witness-unsigned");
    assert_eq!(field(&new[0], "image"), unsigned_ref.as_str());

    // An example capability whose [shellCapabilityImages] entry is an unsigned image.
    let w = World::with_images(&[("jq", unsigned_ref.clone())]);
    let data = w.workspace("data");
    std::fs::write(data.join("f.json"), r#"{"a": 1}"#).unwrap();
    let out = w.cap_run("jq", Some(&data), &[".a", "f.json"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(
        stderr.starts_with(
            "perry-sandbox: error[verification_failed]: capability `jq`: no signature found"
        ) && stderr.contains(&unsigned_repo),
        "{stderr}"
    );
    assert!(w.unpacked().is_empty(), "an unverified image was unpacked");
    let recs = w.cap_records();
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(recs[0]["decision"], "deny");
    assert_eq!(field(&recs[0], "capability"), "jq");
    // The other capabilities still run from their signed images.
    let out = w.cap_run("ls", Some(&data), &["."]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("f.json"));
}

/// The example's capability names, in order.
fn example_names() -> Vec<String> {
    let example: toml::Table = toml::from_str(EXAMPLE).unwrap();
    example["shellCapabilities"]
        .as_table()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[test]
fn list_and_describe_show_image_rules_tier_and_mounts() {
    let w = World::new();
    let imgs = images();
    let host = imgs.reg.host();
    let example: toml::Table = toml::from_str(EXAMPLE).unwrap();
    let caps = example["shellCapabilities"].as_table().unwrap();

    let out = w.cli(&["cap", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    for name in example_names() {
        let cap = caps[&name].as_table().unwrap();
        let tier = cap
            .get("tier")
            .and_then(|t| t.as_str())
            .unwrap_or("hardened");
        let line = listing
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} not listed: {listing}"));
        assert!(line.contains(tier), "{line}");
        assert!(
            line.contains(cap["description"].as_str().unwrap()),
            "{line}"
        );
    }

    let out = w.cli(&["--json", "cap", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let image_of = |name: &str| -> Value {
        list.iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {list:?}"))["image"]
            .clone()
    };
    assert_eq!(image_of("git-log"), format!("{host}/chainguard/git:latest"));
    assert_eq!(image_of("jq"), format!("{host}/chainguard/jq:latest"));
    assert_eq!(image_of("ls"), format!("{host}/chainguard/busybox:latest"));

    // Text: everything a reviewer needs to judge git-log.
    let out = w.cli(&["cap", "describe", "git-log"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let d = text(&out.stdout);
    for needle in [
        "capability:  git-log".to_string(),
        format!("image:       {host}/chainguard/git:latest ([shellCapabilityImages])"),
        "trust:       must pass testworld".into(),
        r#"command:     ["git", "log", "--oneline", "--no-color"] + caller arguments"#.into(),
        "args.max:    1".into(),
        "args.pattern: every argument matches `-n[0-9]{1,3}` (anchored)".into(),
        r#"args.deny:   ["-c", "--upload-pack", "--exec", "--output"]"#.into(),
        "tier:        untrusted, no network".into(),
        "mount:       {workspace} -> /work (read-only)".into(),
        "workdir:     /work".into(),
        "env:         GIT_CONFIG_NOSYSTEM=1".into(),
        "timeout 10s (tier".into(),
        "memory 256MiB (tier".into(),
        "pids 32 (tier".into(),
    ] {
        assert!(d.contains(&needle), "{needle:?} not in:\n{d}");
    }
    let out = w.cli(&["cap", "describe", "ls"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let d = text(&out.stdout);
    for needle in [
        format!("image:       {host}/chainguard/busybox:latest (the capability's own `image`)"),
        r#"args[0]:     one of [".", "src", "docs", "tests"]"#.into(),
        "mount:       {workspace} -> /work (read-only)".into(),
    ] {
        assert!(d.contains(&needle), "{needle:?} not in:\n{d}");
    }
    let out = w.cli(&["cap", "describe", "witness"]);
    assert!(
        text(&out.stdout).contains("mount:       {workspace} -> /out (WRITABLE)"),
        "{}",
        text(&out.stdout)
    );

    // JSON: the definition as configured, the image and why, the trust rules, the tier's spec.
    for name in example_names() {
        let out = w.cli(&["--json", "cap", "describe", &name]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let cap = caps[&name].as_table().unwrap();
        assert_eq!(v["capability"], name.as_str());
        assert_eq!(v["image"], image_of(&name), "{v:#}");
        assert_eq!(v["trust_rules"], serde_json::json!(["testworld"]), "{v:#}");
        let def = &v["definition"];
        let want: Value = serde_json::to_value(cap["command"].clone()).unwrap();
        assert_eq!(def["command"], want, "{v:#}");
        let want: Value = serde_json::to_value(cap["args"].clone()).unwrap();
        assert_eq!(def["args"]["max"], want["max"], "{v:#}");
        assert_eq!(def["args"]["deny"], want["deny"], "{v:#}");
        let mounts = def["mounts"].as_array().unwrap();
        assert_eq!(
            mounts.len(),
            cap["mounts"].as_array().unwrap().len(),
            "{v:#}"
        );
        assert_eq!(mounts[0]["source"], "{workspace}", "{v:#}");
        assert_eq!(mounts[0]["target"], "/work", "{v:#}");
        let tier = cap
            .get("tier")
            .and_then(|t| t.as_str())
            .unwrap_or("hardened");
        assert!(v["tier"].to_string().contains(tier), "{v:#}");
    }
    let out = w.cli(&["--json", "cap", "describe", "git-log"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["image_source"], "capability_images", "{v:#}");
    assert_eq!(v["definition"]["args"]["pattern"], "-n[0-9]{1,3}", "{v:#}");
    let out = w.cli(&["--json", "cap", "describe", "ls"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["image_source"], "capability", "{v:#}");
    assert_eq!(
        v["definition"]["args"]["positions"][0]["one_of"],
        serde_json::json!([".", "src", "docs", "tests"]),
        "{v:#}"
    );
    // Listing and describing run nothing and verify nothing.
    assert!(w.unpacked().is_empty());
}
