//! Behaviour of `perry-sandbox audit …` (and the `config_load` record), through the real binary,
//! on audit directories written by the real `perry_audit` writer.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command as StdCommand, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use assert_cmd::Command;
use perry_audit::{Action, Actor, AuditLog, AuditSink, Correlation, Decision, Event, LogOptions};
use predicates::prelude::*;
use serde_json::Value;

const ORIGIN: &str = "cli-audit.test/audit";

/// A temp directory with a `perryconfig.toml` whose state (and audit log) lives inside it.
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::write(
            root.join("perryconfig.toml"),
            format!(
                "[sandbox]\nstate_dir = \"{}\"\n\n[audit]\norigin = \"{ORIGIN}\"\n",
                root.join("state").display()
            ),
        )
        .unwrap();
        World { _tmp: tmp, root }
    }

    fn config(&self) -> PathBuf {
        self.root.join("perryconfig.toml")
    }

    fn audit_dir(&self) -> PathBuf {
        self.root.join("state/audit")
    }

    fn opts(&self) -> LogOptions {
        let mut o = LogOptions::new(self.audit_dir());
        o.origin = ORIGIN.into();
        o
    }

    fn cli(&self) -> Command {
        let mut c = Command::cargo_bin("perry-sandbox").unwrap();
        c.env_remove("PERRY_CONFIG")
            .env_remove("XDG_CONFIG_HOME")
            .current_dir(&self.root)
            .arg("--config")
            .arg(self.config());
        c
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.cli().arg("--json").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn shown_seqs(&self, filter: &[&str]) -> Vec<u64> {
        let mut args = vec!["audit", "show"];
        args.extend_from_slice(filter);
        self.json(&args)["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect()
    }
}

/// 2026-01-01T00:00:00Z in microseconds.
const T0: i64 = 1_767_225_600_000_000;
const HOUR: i64 = 3_600_000_000;

/// Six varied records, closed with a checkpoint. Returns the shared correlation id (seqs 0-2).
fn populate(w: &World) -> String {
    let log = AuditLog::open(w.opts()).unwrap();
    let req = Correlation::new();
    let alice = Actor::api_peer(1000, 1000, 4242, Some("/usr/bin/perry-client".into()));
    let bob = Actor::api_peer(1001, 1001, 4343, None);
    let events = vec![
        Event::new(Action::Verify, Decision::Allow)
            .image("cgr.dev/chainguard/git:latest")
            .digest("sha256:aaaa")
            .rule("chainguard")
            .tier("hardened")
            .reason("keyless signature matched")
            .actor(alice.clone())
            .correlation(&req)
            .at_micros(T0),
        Event::new(Action::Run, Decision::Allow)
            .image("cgr.dev/chainguard/git@sha256:aaaa")
            .command(["git", "log", "--oneline"])
            .tier("hardened")
            .actor(alice.clone())
            .correlation(&req)
            .at_micros(T0 + HOUR),
        Event::new(Action::Outcome, Decision::Allow)
            .detail("status", 0)
            .actor(alice)
            .correlation(&req)
            .at_micros(T0 + 2 * HOUR),
        Event::new(Action::Verify, Decision::Deny)
            .image("docker.io/library/evil:1")
            .reason("no trust rule matches, \"denied\", by default")
            .actor(bob.clone())
            .at_micros(T0 + 3 * HOUR),
        Event::new(Action::Capability, Decision::Allow)
            .capability("git-log")
            .command(["git", "log", "-n5"])
            .actor(bob)
            .at_micros(T0 + 4 * HOUR),
        Event::new(Action::Run, Decision::Error)
            .image("cgr.dev/chainguard/git:latest")
            .reason("sandbox setup failed:\nno user namespaces")
            .at_micros(T0 + 5 * HOUR),
    ];
    for (i, e) in events.into_iter().enumerate() {
        assert_eq!(log.record(e).unwrap(), i as u64);
    }
    log.close().unwrap();
    req.as_str().to_string()
}

#[test]
fn show_filters_select_the_right_records() {
    let w = World::new();
    let req = populate(&w);
    assert_eq!(w.shown_seqs(&[]), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(w.shown_seqs(&["--action", "verify"]), vec![0, 3]);
    assert_eq!(w.shown_seqs(&["--decision", "deny"]), vec![3]);
    assert_eq!(w.shown_seqs(&["--decision", "error"]), vec![5]);
    assert_eq!(w.shown_seqs(&["--image", "chainguard/git"]), vec![0, 1, 5]);
    assert_eq!(w.shown_seqs(&["--image", "sha256:aaaa"]), vec![0, 1]);
    assert_eq!(w.shown_seqs(&["--capability", "git-log"]), vec![4]);
    assert_eq!(w.shown_seqs(&["--uid", "1001"]), vec![3, 4]);
    assert_eq!(w.shown_seqs(&["--correlation", &req]), vec![0, 1, 2]);
    assert_eq!(
        w.shown_seqs(&[
            "--since",
            "2026-01-01T01:00:00Z",
            "--until",
            "2026-01-01T04:00:00Z"
        ]),
        vec![1, 2, 3]
    );
    // Filters combine; --limit keeps the last N.
    assert_eq!(
        w.shown_seqs(&["--action", "run", "--decision", "allow"]),
        vec![1]
    );
    assert_eq!(w.shown_seqs(&["--limit", "2"]), vec![4, 5]);
    // Everything is older than an hour, so an age bound selects nothing.
    assert!(w.shown_seqs(&["--since", "1h"]).is_empty());
    // Full records in --json.
    let recs = w.json(&["audit", "show", "--correlation", &req]);
    let r0 = &recs["records"][0];
    assert_eq!(r0["actor"]["uid"], 1000);
    assert_eq!(r0["actor"]["via"], "api");
    assert_eq!(r0["actor"]["exe"], "/usr/bin/perry-client");
    assert_eq!(r0["policy"]["rule"], "chainguard");
    assert_eq!(r0["time"], "2026-01-01T00:00:00.000000Z");
    assert_eq!(recs["records"][1]["subject"]["command"][2], "--oneline");
}

#[test]
fn show_prints_a_table_and_rejects_bad_filters() {
    let w = World::new();
    populate(&w);
    let out = w.cli().args(["audit", "show"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "{text}");
    for col in [
        "SEQ", "TIME", "ACTION", "DECISION", "UID", "SUBJECT", "REASON",
    ] {
        assert!(lines[0].contains(col), "{}", lines[0]);
    }
    assert!(lines[4].contains("verify") && lines[4].contains("deny"));
    assert!(lines[4].contains("docker.io/library/evil:1"));
    assert!(lines[5].contains("cap:git-log git log -n5"));
    // A multi-line reason stays on its row.
    assert!(lines[6].contains("sandbox setup failed: no user namespaces"));
    w.cli()
        .args(["audit", "show", "--decision", "maybe"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--decision"));
    w.cli()
        .args(["audit", "show", "--since", "yesterday-ish"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--since"));
}

#[test]
fn export_jsonl_is_the_log_and_csv_honours_filters() {
    let w = World::new();
    populate(&w);
    let out = w
        .cli()
        .args(["audit", "export", "--format", "jsonl"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        out.stdout,
        std::fs::read(w.audit_dir().join("log.jsonl")).unwrap(),
        "jsonl export is byte-identical to the log, so its leaf hashes still verify"
    );
    let out = w
        .cli()
        .args(["audit", "export", "--format", "jsonl", "--uid", "1001"])
        .output()
        .unwrap();
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[0]["seq"].as_u64(), lines[1]["seq"].as_u64()),
        (Some(3), Some(4))
    );

    let out = w
        .cli()
        .args(["audit", "export", "--format", "csv", "--decision", "deny"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let csv = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(rows[0].starts_with("seq,time,uid,"), "{}", rows[0]);
    assert!(rows[1].starts_with("3,2026-01-01T03:00:00.000000Z,1001,"));
    // RFC 4180 quoting: the reason holds a comma and quotes.
    assert!(
        rows[1].contains(r#""no trust rule matches, ""denied"", by default""#),
        "{}",
        rows[1]
    );
    // A multi-line field stays inside its quotes.
    let out = w
        .cli()
        .args(["audit", "export", "--format", "csv", "--decision", "error"])
        .output()
        .unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.contains("\"sandbox setup failed:\nno user namespaces\""),
        "{csv}"
    );
}

#[test]
fn verify_with_trusted_key_and_older_checkpoint() {
    let w = World::new();
    populate(&w);
    let key_out = w.cli().args(["audit", "key"]).output().unwrap();
    assert!(key_out.status.success());
    let vkey = String::from_utf8(key_out.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(vkey.starts_with(&format!("{ORIGIN}+")), "{vkey}");
    let key_file = w.root.join("trusted.vkey");
    std::fs::write(&key_file, format!("{vkey}\n")).unwrap();
    let old = w.root.join("old.note");
    std::fs::copy(w.audit_dir().join("checkpoint"), &old).unwrap();

    // The log grows; the kept checkpoint must still be consistent with it.
    let log = AuditLog::open(w.opts()).unwrap();
    for i in 0..3 {
        log.record(Event::new(Action::Run, Decision::Allow).detail("i", i))
            .unwrap();
    }
    log.close().unwrap();
    w.cli()
        .args(["audit", "verify", "--key"])
        .arg(&key_file)
        .arg("--checkpoint")
        .arg(&old)
        .assert()
        .success()
        .stdout(predicate::str::contains("ok: 9 records"))
        .stdout(predicate::str::contains("signed checkpoint covers 9"))
        .stdout(predicate::str::contains(
            "consistent with the older checkpoint of size 6",
        ));
    let rep = w.json(&["audit", "verify", "--key", &vkey]);
    assert_eq!(rep["report"]["records"], 9);
    assert_eq!(rep["report"]["key_given"], true);

    // Another key: refused, exit 1, verification_failed.
    let other_dir = tempfile::tempdir().unwrap();
    let other = perry_audit::verifier_key(other_dir.path(), ORIGIN)
        .unwrap()
        .to_vkey();
    w.cli()
        .args(["audit", "verify", "--key", &other])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("error[verification_failed]"));

    // A flipped byte in record 4: exit 1, the error names the record.
    let path = w.audit_dir().join("log.jsonl");
    let mut bytes = std::fs::read(&path).unwrap();
    let start = bytes
        .split(|&b| b == b'\n')
        .take(4)
        .map(|l| l.len() + 1)
        .sum::<usize>();
    let pos = start
        + bytes[start..]
            .windows(7)
            .position(|w| w == b"git-log")
            .unwrap();
    bytes[pos] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let out = w
        .cli()
        .args(["--json", "audit", "verify", "--key", &vkey])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["code"], "verification_failed");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("seq 4") && msg.contains("log.jsonl:5"),
        "{msg}"
    );

    // A bad --key argument is the user's error.
    w.cli()
        .args(["audit", "verify", "--key", "not+a+key"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--key"));
}

/// Checks `audit prove` output with tools that share no code with perry-sandbox: Python's
/// hashlib for RFC 6962 hashing and `openssl` for the Ed25519 note signature.
const CHECK_PROOF_PY: &str = r#"
import base64, hashlib, json, subprocess, sys, tempfile, os
proof = json.load(sys.stdin)["proof"]
vkey = sys.argv[1]
# The base64 key may itself contain "+": split at the first two only (C2SP signed-note).
name, keyid, keyb64 = vkey.split("+", 2)
raw = base64.b64decode(keyb64)
assert raw[0] == 1 and len(raw) == 33, "ed25519 note key"
pub = raw[1:]
# The note: text, blank line, signature lines "— name base64(keyid || sig)".
note = proof["checkpoint"]
text, sigs = note.split("\n\n", 1)
text += "\n"
lines = text.split("\n")
assert lines[0] == name
size, root_b64 = int(lines[1]), lines[2]
assert size == proof["tree_size"] and root_b64 == proof["root"]
sig = None
for l in sigs.strip("\n").split("\n"):
    assert l.startswith("\u2014 ")
    n, s = l[2:].split(" ")
    s = base64.b64decode(s)
    if n == name and s[:4].hex() == keyid:
        sig = s[4:]
assert sig is not None, "no signature by the trusted key"
with tempfile.TemporaryDirectory() as d:
    der = bytes.fromhex("302a300506032b6570032100") + pub
    pem = "-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(der).decode() + "\n-----END PUBLIC KEY-----\n"
    open(os.path.join(d, "pub.pem"), "w").write(pem)
    open(os.path.join(d, "msg"), "wb").write(text.encode())
    open(os.path.join(d, "sig"), "wb").write(sig)
    r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", os.path.join(d, "pub.pem"),
                        "-rawin", "-in", os.path.join(d, "msg"), "-sigfile", os.path.join(d, "sig")],
                       capture_output=True)
    assert r.returncode == 0, "openssl: signature does not verify: " + r.stdout.decode() + r.stderr.decode()
# RFC 9162 section 2.1.3.2: verify the inclusion proof.
h = lambda b: hashlib.sha256(b).digest()
leaf = h(b"\x00" + proof["record"].encode())
assert leaf.hex() == proof["leaf_hash"]
fn, sn, r = proof["seq"], size - 1, leaf
for p in proof["proof"]:
    p = bytes.fromhex(p)
    assert sn != 0
    if fn % 2 == 1 or fn == sn:
        r = h(b"\x01" + p + r)
        if fn % 2 == 0:
            while fn % 2 == 0 and fn != 0:
                fn >>= 1; sn >>= 1
    else:
        r = h(b"\x01" + r + p)
    fn >>= 1; sn >>= 1
assert sn == 0 and r == base64.b64decode(root_b64), "inclusion proof does not lead to the root"
print("independently verified seq", proof["seq"], "in tree of size", size)
"#;

fn check_elsewhere(proof_json: &[u8], vkey: &str) -> Result<String, String> {
    let mut child = StdCommand::new("python3")
        .args(["-c", CHECK_PROOF_PY, vkey])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed to check proofs independently");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), proof_json).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn prove_output_checks_with_independent_tools() {
    let w = World::new();
    populate(&w);
    let vkey = String::from_utf8(w.cli().args(["audit", "key"]).output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    for seq in 0..6u64 {
        let out = w
            .cli()
            .args(["--json", "audit", "prove", &seq.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ok = check_elsewhere(&out.stdout, &vkey).unwrap_or_else(|e| panic!("seq {seq}: {e}"));
        assert!(
            ok.contains(&format!("verified seq {seq} in tree of size 6")),
            "{ok}"
        );
        // The same checker rejects a doctored record, and a proof checked under another key.
        let mut p: Value = serde_json::from_slice(&out.stdout).unwrap();
        let rec = p["proof"]["record"]
            .as_str()
            .unwrap()
            .replace("\"allow\"", "\"deny\"");
        let doctored_record = rec != p["proof"]["record"].as_str().unwrap();
        p["proof"]["record"] = Value::String(rec);
        if doctored_record {
            assert!(check_elsewhere(p.to_string().as_bytes(), &vkey).is_err());
        }
    }
    let other_dir = tempfile::tempdir().unwrap();
    let other = perry_audit::verifier_key(other_dir.path(), ORIGIN)
        .unwrap()
        .to_vkey();
    let out = w
        .cli()
        .args(["--json", "audit", "prove", "2"])
        .output()
        .unwrap();
    assert!(check_elsewhere(&out.stdout, &other).is_err());
    // Text output carries the same parts for a human.
    let out = w.cli().args(["audit", "prove", "2"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("record seq 2 (leaf index 2):"));
    assert!(text.contains("tree size: 6"));
    assert!(text.contains(&format!("\u{2014} {ORIGIN} ")));
    // A seq past the checkpoint is refused with advice.
    w.cli()
        .args(["audit", "prove", "6"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("audit checkpoint"));
}

#[test]
fn checkpoint_signs_records_another_process_appended() {
    let w = World::new();
    populate(&w);
    // A long-running writer (as `serve` would be) appends records that are not signed yet.
    let mut o = w.opts();
    o.checkpoint_every = 1_000_000;
    o.checkpoint_interval = Duration::from_secs(3600);
    let log = AuditLog::open(o).unwrap();
    for i in 0..4 {
        log.record(Event::new(Action::Run, Decision::Allow).detail("i", i))
            .unwrap();
    }
    let rep = w.json(&["audit", "verify"]);
    assert_eq!(rep["report"]["checkpoint_size"], 6);
    assert_eq!(rep["report"]["unsigned"], 4);
    let out = w.cli().args(["audit", "checkpoint"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let note = String::from_utf8(out.stdout).unwrap();
    assert!(note.starts_with(&format!("{ORIGIN}\n10\n")), "{note}");
    assert_eq!(
        note,
        std::fs::read_to_string(w.audit_dir().join("checkpoint")).unwrap()
    );
    let rep = w.json(&["audit", "verify"]);
    assert_eq!(rep["report"]["checkpoint_size"], 10);
    assert_eq!(rep["report"]["unsigned"], 0);
    // The writer keeps appending after the CLI's checkpoint.
    assert_eq!(
        log.record(Event::new(Action::Outcome, Decision::Allow))
            .unwrap(),
        10
    );
    drop(log);
    assert_eq!(w.json(&["audit", "checkpoint"])["size"], 11);
}

#[test]
fn tail_follow_prints_records_as_they_are_appended() {
    let w = World::new();
    populate(&w);
    let mut child = StdCommand::new(env!("CARGO_BIN_EXE_perry-sandbox"))
        .env_remove("PERRY_CONFIG")
        .arg("--config")
        .arg(w.config())
        .args([
            "--json",
            "audit",
            "tail",
            "-f",
            "-n",
            "2",
            "--decision",
            "allow",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| -> Value {
        let l = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("tail -f printed nothing for {what}"));
        serde_json::from_str(&l).unwrap()
    };
    // The last 2 matching records first.
    assert_eq!(next("backlog 1")["seq"], 2);
    assert_eq!(next("backlog 2")["seq"], 4);
    // Then new ones as they become durable, filtered, across a segment rotation.
    let mut o = w.opts();
    o.segment_size = 1;
    let log = AuditLog::open(o).unwrap();
    log.record(Event::new(Action::Run, Decision::Deny)).unwrap();
    log.record(Event::new(Action::Run, Decision::Allow).detail("n", 7))
        .unwrap();
    let r = next("a new record");
    assert_eq!(
        (r["seq"].as_u64(), r["details"]["n"].as_u64()),
        (Some(7), Some(7))
    );
    log.record(Event::new(Action::Capability, Decision::Allow).capability("ls"))
        .unwrap();
    assert_eq!(
        next("a record in a new segment")["subject"]["capability"],
        "ls"
    );
    child.kill().unwrap();
    let _ = child.wait();
    log.close().unwrap();
    assert!(perry_audit::store::segments(&w.audit_dir()).unwrap().len() > 1);
}

#[test]
fn key_is_public_and_the_signing_key_stays_private() {
    let w = World::new();
    // `audit key` generates the key on first use.
    let out = w.cli().args(["audit", "key"]).output().unwrap();
    assert!(out.status.success());
    let vkey = String::from_utf8(out.stdout).unwrap();
    let v = perry_audit::NoteVerifier::parse(vkey.trim()).unwrap();
    assert_eq!(v.to_vkey(), vkey.trim());
    let key_path = w.audit_dir().join("signing-key.pk8");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The same key on later calls, and no output anywhere shows private key bytes.
    let secret = std::fs::read(&key_path).unwrap();
    populate(&w);
    let mut all = Vec::new();
    for args in [
        &["audit", "key"][..],
        &["--json", "audit", "key"],
        &["audit", "verify"],
        &["--json", "audit", "verify"],
        &["audit", "checkpoint"],
        &["--json", "audit", "prove", "0"],
        &["-vvv", "audit", "show"],
    ] {
        let out = w.cli().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        all.extend(out.stdout);
        all.extend(out.stderr);
    }
    assert!(String::from_utf8_lossy(&all).contains(vkey.trim()));
    // ring writes Ed25519 PKCS#8 v2: a 16-byte header, `04 20` + the 32-byte private seed, then
    // the public key (which is printed, legitimately). Look for any 12-byte piece of the seed,
    // raw, hex or base64 (at every alignment).
    assert_eq!(&secret[14..16], &[0x04, 0x20], "PKCS#8 layout");
    let seed = &secret[16..48];
    let text = String::from_utf8_lossy(&all).into_owned();
    for win in seed.windows(12) {
        assert!(!all.windows(12).any(|x| x == win), "raw seed bytes printed");
        let hex: String = win.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!text.contains(&hex), "seed printed as hex");
    }
    for skip in 0..3 {
        let b = b64(&seed[skip..]);
        assert!(!text.contains(&b[..16]), "seed printed as base64");
    }
    // A world-readable key is refused by every writer.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    w.cli()
        .args(["audit", "checkpoint"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("chmod 600"));
}

#[test]
fn config_check_records_config_load_with_the_file_digest() {
    let w = World::new();
    w.cli().args(["config", "check"]).assert().success();
    let recs = w.json(&["audit", "show", "--action", "config_load"]);
    let recs = recs["records"].as_array().unwrap();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["actor"]["via"], "cli");
    assert_eq!(r["actor"]["pid"].as_u64().map(|p| p > 0), Some(true));
    assert!(r["actor"]["exe"]
        .as_str()
        .unwrap()
        .ends_with("perry-sandbox"));
    assert_eq!(r["details"]["path"], w.config().to_str().unwrap());
    assert_eq!(
        r["details"]["sha256"],
        perry_audit::sha256_hex(&std::fs::read(w.config()).unwrap())
    );
    assert_eq!(r["policy"]["tier"], "hardened");
    // Validating a candidate file decides nothing and records nothing.
    let cand = w.root.join("candidate.toml");
    std::fs::write(&cand, "[sandbox]\ndefault_tier = \"untrusted\"\n").unwrap();
    w.cli()
        .args(["config", "check"])
        .arg(&cand)
        .assert()
        .success();
    assert_eq!(w.shown_seqs(&[]), vec![0]);
    // The record is on the verified, signed log.
    let rep = w.json(&["audit", "verify"]);
    assert_eq!(rep["report"]["checkpoint_size"], 1);
    // An audit directory that cannot be written is reported; the check itself still passes.
    let blocked = World::new();
    std::fs::write(blocked.root.join("state"), "a file, not a directory").unwrap();
    blocked
        .cli()
        .args(["config", "check"])
        .assert()
        .success()
        .stderr(predicate::str::contains("not recorded in the audit log"));
}

/// Standard base64 (for looking for leaked key bytes in output).
fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
