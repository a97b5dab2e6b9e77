//! Tampering is detected, and the error names the first bad record: a flipped byte in any record,
//! a deleted record, two swapped records, truncation, a whole log replaced by another internally
//! valid one (caught by an older checkpoint), and a checkpoint signed by another key.

use std::fs;
use std::path::Path;

use perry_audit::{
    verify, Action, AuditLog, AuditSink, Decision, Event, LogOptions, LogVerifyError, NoteSigner,
    NoteVerifier, VerifyOptions,
};

const N: u64 = 10;

fn opts(dir: &Path) -> LogOptions {
    let mut o = LogOptions::new(dir);
    o.origin = "tamper.example/audit".into();
    o
}

/// A closed log of N records, checkpointed at N.
fn make_log(dir: &Path, tag: &str) {
    let log = AuditLog::open(opts(dir)).unwrap();
    for i in 0..N {
        log.record(
            Event::new(Action::Verify, Decision::Allow)
                .image(format!("registry.test/{tag}{i}:latest"))
                .reason(format!("reason {tag} {i}")),
        )
        .unwrap();
    }
    log.close().unwrap();
}

fn lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn write_lines(dir: &Path, l: &[String]) {
    let mut s = l.join("\n");
    s.push('\n');
    fs::write(dir.join("log.jsonl"), s).unwrap();
}

fn key(dir: &Path) -> NoteVerifier {
    perry_audit::store::read_vkey(dir).unwrap()
}

fn trusted(dir: &Path) -> VerifyOptions {
    VerifyOptions {
        key: Some(key(dir)),
        old_checkpoint: None,
    }
}

fn fails_at(dir: &Path, o: &VerifyOptions, seq: u64) -> String {
    let e = verify(dir, o).expect_err("tampering must be detected");
    assert_eq!(e.first_bad_seq(), Some(seq), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("seq {seq}")), "{msg}");
    msg
}

#[test]
fn untouched_log_verifies() {
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), "a");
    let rep = verify(d.path(), &trusted(d.path())).unwrap();
    assert_eq!((rep.records, rep.checkpoint_size), (N, Some(N)));
}

#[test]
fn flipped_byte_in_any_record_names_it() {
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), "a");
    let orig = fs::read(d.path().join("log.jsonl")).unwrap();
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            orig.iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .take(N as usize)
        .collect();
    for seq in 0..N {
        let line_start = starts[seq as usize];
        let line_len = orig[line_start..].iter().position(|&b| b == b'\n').unwrap();
        // Positions: structure (quote of "seq"), a digit of the seq, inside a string value (still
        // valid JSON, caught only by hashing), the closing brace.
        let text = std::str::from_utf8(&orig[line_start..line_start + line_len]).unwrap();
        let in_reason = text.find("reason a").unwrap() + 2;
        for off in [1, 7, in_reason, line_len - 1] {
            let mut b = orig.clone();
            b[line_start + off] ^= 0x01;
            fs::write(d.path().join("log.jsonl"), &b).unwrap();
            let msg = fails_at(d.path(), &trusted(d.path()), seq);
            assert!(msg.contains("log.jsonl:"), "{msg}");
            assert!(
                msg.contains(&format!(":{}:", seq + 1)),
                "line number in {msg}"
            );
        }
    }
    // Without the leaf-hash hint, an in-string flip is still caught by the signed root.
    let mut b = orig.clone();
    let text = std::str::from_utf8(&orig).unwrap();
    b[text.find("reason a 4").unwrap() + 3] ^= 0x01;
    fs::write(d.path().join("log.jsonl"), &b).unwrap();
    fs::remove_file(d.path().join("leaves.bin")).unwrap();
    let e = verify(d.path(), &trusted(d.path())).unwrap_err();
    assert!(
        matches!(e, LogVerifyError::RootMismatch { size: N, .. }),
        "{e}"
    );
}

#[test]
fn deleted_record_is_named() {
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), "a");
    let mut l = lines(d.path());
    l.remove(4);
    write_lines(d.path(), &l);
    let msg = fails_at(d.path(), &trusted(d.path()), 4);
    assert!(msg.contains("deleted"), "{msg}");
}

#[test]
fn swapped_records_are_named() {
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), "a");
    let mut l = lines(d.path());
    l.swap(2, 6);
    write_lines(d.path(), &l);
    fails_at(d.path(), &trusted(d.path()), 2);
}

#[test]
fn truncation_is_named() {
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), "a");
    let mut l = lines(d.path());
    l.truncate(7);
    write_lines(d.path(), &l);
    let msg = fails_at(d.path(), &trusted(d.path()), 7);
    assert!(msg.contains("covers 10"), "{msg}");
    // Cut in the middle of a line: the torn part is not a record, the loss is still named.
    let bytes = fs::read(d.path().join("log.jsonl")).unwrap();
    fs::write(d.path().join("log.jsonl"), &bytes[..bytes.len() - 30]).unwrap();
    fails_at(d.path(), &trusted(d.path()), 6);
    // Everything gone.
    fs::write(d.path().join("log.jsonl"), b"").unwrap();
    fails_at(d.path(), &trusted(d.path()), 0);
    // And a writer refuses to append to a truncated log.
    let err = AuditLog::open(opts(d.path())).unwrap_err().to_string();
    assert!(err.contains("records from seq 0 on are missing"), "{err}");
}

#[test]
fn replaced_log_is_caught_by_an_older_checkpoint() {
    let real = tempfile::tempdir().unwrap();
    make_log(real.path(), "real");
    // The reviewer kept this checkpoint.
    let old_note = fs::read_to_string(real.path().join("checkpoint")).unwrap();
    let trusted_key = key(real.path());
    // Root on the host builds another internally valid log with the same key, longer than the
    // original, and puts it in place of everything.
    let forged = tempfile::tempdir().unwrap();
    fs::copy(
        real.path().join("signing-key.pk8"),
        forged.path().join("signing-key.pk8"),
    )
    .unwrap();
    let log = AuditLog::open(opts(forged.path())).unwrap();
    for i in 0..N + 5 {
        log.record(Event::new(Action::Verify, Decision::Deny).reason(format!("forged {i}")))
            .unwrap();
    }
    log.close().unwrap();
    for f in ["log.jsonl", "checkpoint", "leaves.bin", "key.vkey"] {
        fs::copy(forged.path().join(f), real.path().join(f)).unwrap();
    }
    // On its own, the forgery is internally consistent ...
    verify(
        real.path(),
        &VerifyOptions {
            key: Some(trusted_key.clone()),
            old_checkpoint: None,
        },
    )
    .unwrap();
    // ... but not with what the reviewer held.
    let o = VerifyOptions {
        key: Some(trusted_key),
        old_checkpoint: Some(("old.note".into(), old_note)),
    };
    let e = verify(real.path(), &o).unwrap_err();
    assert!(
        matches!(e, LogVerifyError::Inconsistent { old_size: N, .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("old.note") && msg.contains("at or before seq 9"),
        "{msg}"
    );
}

#[test]
fn older_checkpoint_of_the_same_log_proves_consistent() {
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), "a");
    let old_note = fs::read_to_string(d.path().join("checkpoint")).unwrap();
    let log = AuditLog::open(opts(d.path())).unwrap();
    for i in 0..7 {
        log.record(Event::new(Action::Run, Decision::Allow).detail("i", i))
            .unwrap();
    }
    log.close().unwrap();
    let o = VerifyOptions {
        key: Some(key(d.path())),
        old_checkpoint: Some(("old.note".into(), old_note)),
    };
    let rep = verify(d.path(), &o).unwrap();
    assert_eq!((rep.old_checkpoint_size, rep.records), (Some(N), N + 7));
}

#[test]
fn checkpoint_signed_by_another_key_is_rejected() {
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), "a");
    let trusted_key = key(d.path());
    let note = fs::read_to_string(d.path().join("checkpoint")).unwrap();
    let text = perry_audit::Note::parse(&note).unwrap().text;
    let other =
        NoteSigner::from_pkcs8("tamper.example/audit", NoteSigner::generate_pkcs8()).unwrap();
    fs::write(d.path().join("checkpoint"), other.sign(&text)).unwrap();
    fs::write(d.path().join("key.vkey"), other.verifier().to_vkey()).unwrap();
    let e = verify(
        d.path(),
        &VerifyOptions {
            key: Some(trusted_key),
            old_checkpoint: None,
        },
    )
    .unwrap_err();
    assert!(matches!(e, LogVerifyError::Checkpoint { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("checkpoint") && msg.contains("no signature from the trusted key"),
        "{msg}"
    );
}

#[test]
fn unsigned_records_must_be_well_formed_and_signed_ones_are_named_without_the_hint() {
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), "a");
    let orig = lines(d.path());
    // A canonical record appended after the checkpoint verifies, reported as unsigned ...
    let mut l = orig.clone();
    l.push(orig[9].replacen("{\"seq\":9,", "{\"seq\":10,", 1));
    write_lines(d.path(), &l);
    let rep = verify(d.path(), &trusted(d.path())).unwrap();
    assert_eq!((rep.records, rep.unsigned), (N + 1, 1));
    // ... a malformed one is named even though no signature covers it.
    let last = l.len() - 1;
    l[last] = l[last].replacen("\"action\":\"verify\"", "\"action\": \"verify\"", 1);
    write_lines(d.path(), &l);
    let msg = fails_at(d.path(), &trusted(d.path()), N);
    assert!(msg.contains("canonical"), "{msg}");
    // Under the signed root, with the leaf-hash hint gone, a non-canonical edit is still named
    // exactly (a full parse runs when the root does not match).
    let mut l = orig.clone();
    l[3] = l[3].replacen("\"action\":\"verify\"", "\"action\": \"verify\"", 1);
    write_lines(d.path(), &l);
    fs::remove_file(d.path().join("leaves.bin")).unwrap();
    let msg = fails_at(d.path(), &trusted(d.path()), 3);
    assert!(msg.contains("canonical"), "{msg}");
    // And a malformed record before a framing error is the one named.
    let mut l = orig.clone();
    l[2] = l[2].replacen("\"decision\":\"allow\"", "\"decision\":\"maybe\"", 1);
    l.remove(6);
    write_lines(d.path(), &l);
    fails_at(d.path(), &trusted(d.path()), 2);
}
