//! The writer through its public API: durability, group commit, checkpoints, rotation,
//! cross-process locking, quarantine, keys, proofs and queries.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use perry_audit::query::{for_each_record, Filter, Follower};
use perry_audit::{
    prove, verify, Action, AuditLog, AuditSink, Correlation, Decision, Event, LogOptions,
    VerifyOptions,
};

fn opts(dir: &Path) -> LogOptions {
    let mut o = LogOptions::new(dir);
    o.origin = "test.example/audit".into();
    o
}

fn ev(i: u64) -> Event {
    Event::new(Action::Run, Decision::Allow)
        .image(format!("registry.test/img{i}:latest"))
        .reason(format!("record number {i}"))
        .detail("i", i)
}

fn records(dir: &Path) -> Vec<perry_audit::Record> {
    let mut v = Vec::new();
    for_each_record(dir, |r, _| {
        v.push(r.clone());
        true
    })
    .unwrap();
    v
}

#[test]
fn appends_are_sequential_durable_and_verify() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(opts(d.path())).unwrap();
    let id = Correlation::new();
    for i in 0..5 {
        assert_eq!(log.record(ev(i).correlation(&id)).unwrap(), i);
    }
    // Durable before return: another reader sees them without close.
    let rs = records(d.path());
    assert_eq!(rs.len(), 5);
    assert!(rs.iter().all(|r| r.correlation == id.as_str()));
    log.close().unwrap();
    let rep = verify(d.path(), &VerifyOptions::default()).unwrap();
    assert_eq!(
        (rep.records, rep.checkpoint_size, rep.unsigned),
        (5, Some(5), 0)
    );
    // Reopening continues the sequence and keeps verifying.
    let log = AuditLog::open(opts(d.path())).unwrap();
    assert_eq!(log.record(ev(5)).unwrap(), 5);
    drop(log);
    assert_eq!(
        verify(d.path(), &Default::default())
            .unwrap()
            .checkpoint_size,
        Some(6)
    );
}

#[test]
fn a_staged_event_is_written_with_the_next_record_or_at_flush_or_close() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(opts(d.path())).unwrap();
    // Staged: not written on its own (that is what saves the separate fdatasync)...
    log.stage(ev(0));
    assert!(records(d.path()).is_empty());
    // ...but carried by the next record, ahead of it, and durable when record returns.
    assert_eq!(log.record(ev(1)).unwrap(), 1);
    let rs = records(d.path());
    assert_eq!(rs.len(), 2);
    assert_eq!((rs[0].seq, rs[0].reason.as_str()), (0, "record number 0"));
    assert_eq!((rs[1].seq, rs[1].reason.as_str()), (1, "record number 1"));
    // flush writes what is staged without a record to carry it.
    log.stage(ev(2));
    log.flush().unwrap();
    assert_eq!(records(d.path()).len(), 3);
    log.flush().unwrap();
    assert_eq!(
        records(d.path()).len(),
        3,
        "flush with nothing staged writes nothing"
    );
    // close writes what is still staged, and the checkpoint covers it.
    log.stage(ev(3));
    log.close().unwrap();
    assert_eq!(records(d.path()).len(), 4);
    let rep = verify(d.path(), &VerifyOptions::default()).unwrap();
    assert_eq!((rep.records, rep.checkpoint_size), (4, Some(4)));
}

#[test]
fn concurrent_writers_get_unique_contiguous_seqs() {
    let d = tempfile::tempdir().unwrap();
    let log = Arc::new(AuditLog::open(opts(d.path())).unwrap());
    let sink: Arc<dyn AuditSink> = log.clone();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let s = sink.clone();
            std::thread::spawn(move || {
                (0..100)
                    .map(|i| s.record(ev(t * 1000 + i)).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    seqs.sort();
    assert_eq!(seqs, (0..800).collect::<Vec<_>>());
    drop(sink);
    Arc::try_unwrap(log).unwrap().close().unwrap();
    let rep = verify(d.path(), &Default::default()).unwrap();
    assert_eq!(rep.records, 800);
}

#[test]
fn two_writers_on_one_directory_interleave_safely() {
    // Two independent writers (as two processes would be): separate lock descriptions.
    let d = tempfile::tempdir().unwrap();
    let a = AuditLog::open(opts(d.path())).unwrap();
    let b = AuditLog::open(opts(d.path())).unwrap();
    let mut seqs = Vec::new();
    for i in 0..20 {
        seqs.push(a.record(ev(i)).unwrap());
        seqs.push(b.record(ev(100 + i)).unwrap());
    }
    assert_eq!(seqs, (0..40).collect::<Vec<_>>());
    a.close().unwrap();
    b.close().unwrap();
    assert_eq!(
        verify(d.path(), &Default::default())
            .unwrap()
            .checkpoint_size,
        Some(40)
    );
}

#[test]
fn checkpoints_every_n_records_and_after_interval() {
    let d = tempfile::tempdir().unwrap();
    let mut o = opts(d.path());
    o.checkpoint_every = 3;
    o.checkpoint_interval = Duration::from_millis(100);
    let log = AuditLog::open(o).unwrap();
    for i in 0..4 {
        log.record(ev(i)).unwrap();
    }
    let cp = |d: &Path| {
        let t = fs::read_to_string(d.join("checkpoint")).unwrap();
        perry_audit::Checkpoint::parse_text(&perry_audit::Note::parse(&t).unwrap().text)
            .unwrap()
            .size
    };
    assert_eq!(cp(d.path()), 3);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cp(d.path()) != 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "timer checkpoint never came"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let note = log.checkpoint().unwrap();
    assert!(note.starts_with("test.example/audit\n4\n"));
    assert!(note.contains("\n\n\u{2014} test.example/audit "));
}

#[test]
fn signing_key_is_private_and_never_printed() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(opts(d.path())).unwrap();
    log.record(ev(0)).unwrap();
    let vkey = log.verifier().to_vkey();
    assert!(vkey.starts_with("test.example/audit+"));
    log.close().unwrap();
    let key = d.path().join("signing-key.pk8");
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = fs::read(&key).unwrap();
    for f in ["log.jsonl", "checkpoint", "key.vkey"] {
        let content = fs::read(d.path().join(f)).unwrap();
        assert!(
            !content
                .windows(32)
                .any(|w| secret.windows(32).any(|s| s == w)),
            "{f} leaks key bytes"
        );
    }
    // A readable key is refused, not used.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = AuditLog::open(opts(d.path())).unwrap_err().to_string();
    assert!(
        err.contains("signing-key.pk8") && err.contains("chmod 600"),
        "{err}"
    );
}

#[test]
fn rotation_into_segments_keeps_verification_and_proofs() {
    let d = tempfile::tempdir().unwrap();
    let mut o = opts(d.path());
    o.segment_size = 2000;
    o.checkpoint_every = 7;
    let log = AuditLog::open(o.clone()).unwrap();
    log.record(ev(0)).unwrap();
    log.record(ev(1)).unwrap();
    // A reviewer keeps a checkpoint taken before any rotation.
    let early = log.checkpoint().unwrap();
    for i in 2..40 {
        log.record(ev(i)).unwrap();
    }
    log.close().unwrap();
    let segs = perry_audit::store::segments(d.path()).unwrap();
    assert!(segs.len() >= 4, "expected several segments, got {segs:?}");
    assert_eq!(segs[0].first_seq, Some(0));
    let rep = verify(d.path(), &Default::default()).unwrap();
    assert_eq!((rep.records, rep.checkpoint_size), (40, Some(40)));
    // The early checkpoint is proven consistent with the log across all the segments.
    let with_old = perry_audit::VerifyOptions {
        key: None,
        old_checkpoint: Some(("early.note".into(), early)),
    };
    let rep = verify(d.path(), &with_old).unwrap();
    assert_eq!(rep.old_checkpoint_size, Some(2));
    // Archiving a sealed segment away is noticed (named), giving it back restores verification.
    let archived = d.path().join("archived.jsonl");
    fs::rename(&segs[1].path, &archived).unwrap();
    let err = verify(d.path(), &Default::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("{}", segs[2].path.display())),
        "{err}"
    );
    fs::rename(&archived, &segs[1].path).unwrap();
    verify(d.path(), &with_old).unwrap();
    let p = prove(d.path(), 17, None).unwrap();
    p.check(&perry_audit::store::read_vkey(d.path()).unwrap())
        .unwrap();
    assert_eq!(records(d.path()).len(), 40);
    // A reopened writer continues in the right segment.
    let log = AuditLog::open(o).unwrap();
    assert_eq!(log.record(ev(40)).unwrap(), 40);
    drop(log);
    assert_eq!(verify(d.path(), &Default::default()).unwrap().records, 41);
    // A sealed segment renamed out of place is named.
    let last_sealed = segs[segs.len() - 2].path.clone();
    let bogus = d.path().join("log-00000000000000099999.jsonl");
    fs::rename(&last_sealed, &bogus).unwrap();
    let err = verify(d.path(), &Default::default()).unwrap_err();
    assert!(
        err.to_string().contains("log-00000000000000099999.jsonl"),
        "{err}"
    );
}

#[test]
fn torn_last_line_is_reported_then_quarantined_never_merged() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(opts(d.path())).unwrap();
    for i in 0..3 {
        log.record(ev(i)).unwrap();
    }
    log.close().unwrap();
    let torn = br#"{"seq":3,"time":"2026-01-01T00:00:00.000000Z","actor":{"ui"#;
    let path = d.path().join("log.jsonl");
    let mut content = fs::read(&path).unwrap();
    content.extend_from_slice(torn);
    fs::write(&path, &content).unwrap();
    // Verify reports it, and the log still verifies.
    let rep = verify(d.path(), &Default::default()).unwrap();
    assert_eq!(rep.torn_tail_bytes, torn.len() as u64);
    assert!(rep.warnings.iter().any(|w| w.contains("torn last line")));
    // The next writer moves it to quarantine before appending.
    let log = AuditLog::open(opts(d.path())).unwrap();
    assert_eq!(log.record(ev(3)).unwrap(), 3);
    log.close().unwrap();
    let rep = verify(d.path(), &Default::default()).unwrap();
    assert_eq!(rep.records, 4);
    assert_eq!(rep.torn_tail_bytes, 0);
    assert_eq!(rep.quarantined.len(), 1);
    assert_eq!(rep.quarantined[0].seq, 3);
    assert_eq!(fs::read(&rep.quarantined[0].path).unwrap(), torn);
    assert!(!fs::read_to_string(&path).unwrap().contains("\"ui{"));
    assert!(rep
        .warnings
        .iter()
        .any(|w| w.contains("quarantined torn line")));
}

#[test]
fn filters_select_records() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(opts(d.path())).unwrap();
    let id = Correlation::new();
    log.record(
        Event::new(Action::Verify, Decision::Allow)
            .image("a/b:1")
            .correlation(&id)
            .at_micros(1_000_000),
    )
    .unwrap();
    log.record(
        Event::new(Action::Run, Decision::Deny)
            .capability("git-log")
            .at_micros(2_000_000),
    )
    .unwrap();
    log.record(
        Event::new(Action::Run, Decision::Allow)
            .image("a/c:2")
            .correlation(&id)
            .at_micros(3_000_000),
    )
    .unwrap();
    log.close().unwrap();
    let all = records(d.path());
    let pick =
        |f: Filter| -> Vec<u64> { all.iter().filter(|r| f.matches(r)).map(|r| r.seq).collect() };
    assert_eq!(
        pick(Filter {
            action: Some("run".into()),
            ..Default::default()
        }),
        [1, 2]
    );
    assert_eq!(
        pick(Filter {
            decision: Some(Decision::Deny),
            ..Default::default()
        }),
        [1]
    );
    assert_eq!(
        pick(Filter {
            image: Some("a/".into()),
            ..Default::default()
        }),
        [0, 2]
    );
    assert_eq!(
        pick(Filter {
            capability: Some("git-log".into()),
            ..Default::default()
        }),
        [1]
    );
    assert_eq!(
        pick(Filter {
            correlation: Some(id.to_string()),
            ..Default::default()
        }),
        [0, 2]
    );
    assert_eq!(
        pick(Filter {
            since: Some(2_000_000),
            until: Some(3_000_000),
            ..Default::default()
        }),
        [1]
    );
    let uid = all[0].actor.uid;
    assert_eq!(
        pick(Filter {
            uid: Some(uid),
            ..Default::default()
        })
        .len(),
        3
    );
    assert!(pick(Filter {
        uid: Some(uid.wrapping_add(1)),
        ..Default::default()
    })
    .is_empty());
}

#[test]
fn follower_sees_new_records_across_rotation() {
    let d = tempfile::tempdir().unwrap();
    let mut o = opts(d.path());
    o.segment_size = 1500;
    let log = AuditLog::open(o).unwrap();
    log.record(ev(0)).unwrap();
    let mut f = Follower::new(d.path(), 0);
    assert_eq!(f.poll().unwrap().len(), 1);
    assert!(f.poll().unwrap().is_empty());
    let mut seen = Vec::new();
    for i in 1..20 {
        log.record(ev(i)).unwrap();
        seen.extend(f.poll().unwrap().into_iter().map(|r| r.seq));
    }
    assert_eq!(seen, (1..20).collect::<Vec<_>>());
}

#[test]
fn inclusion_proof_checks_and_rejects_a_changed_record() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(opts(d.path())).unwrap();
    for i in 0..11 {
        log.record(ev(i)).unwrap();
    }
    log.close().unwrap();
    let key = perry_audit::store::read_vkey(d.path()).unwrap();
    for seq in 0..11 {
        let p = prove(d.path(), seq, Some(key.clone())).unwrap();
        assert_eq!(p.tree_size, 11);
        p.check(&key).unwrap();
        let mut bad = p.clone();
        bad.record = bad.record.replace("record number", "record mumber");
        assert!(bad.check(&key).is_err());
    }
    assert!(prove(d.path(), 11, None)
        .unwrap_err()
        .to_string()
        .contains("not covered"));
}

#[test]
fn unsigned_records_are_warned_about_only_when_no_checkpoint_covers_them() {
    let d = tempfile::tempdir().unwrap();
    let warned = |d: &Path| -> Vec<String> { verify(d, &Default::default()).unwrap().warnings };
    // No checkpoint yet: said.
    let mut o = opts(d.path());
    o.checkpoint_every = 1000;
    let log = AuditLog::open(o).unwrap();
    log.record(ev(0)).unwrap();
    log.record(ev(1)).unwrap();
    let w = warned(d.path());
    assert!(w.iter().any(|w| w.contains("no checkpoint yet")), "{w:?}");
    // Everything signed: no warning about unsigned records at all.
    log.checkpoint().unwrap();
    let w = warned(d.path());
    assert!(
        !w.iter()
            .any(|w| w.contains("unsigned") || w.contains("not signed")),
        "{w:?}"
    );
    // Some records after the checkpoint: those are counted, and "no checkpoint" is not claimed.
    log.record(ev(2)).unwrap();
    let w = warned(d.path());
    assert!(
        w.iter()
            .any(|w| w.contains("1 records after the latest checkpoint")),
        "{w:?}"
    );
    assert!(!w.iter().any(|w| w.contains("no checkpoint yet")), "{w:?}");
    log.close().unwrap();
}
