//! Opening the log resumes from the writer-state hint (`writer.state`) of the latest checkpoint
//! instead of replaying every record, and falls back to the full replay whenever the hint does
//! not check out.
//!
//! How these tests tell the two paths apart: one letter is changed inside a record of the first
//! sealed segment. The record stays well formed, so only its hash betrays it: a full replay
//! refuses the log ("do not match the signed checkpoint"), while resuming never reads that
//! segment and opens. `verify` reports the change either way.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use perry_audit::store::{self, segments};
use perry_audit::{
    verify, Action, AuditLog, AuditSink, Decision, Event, LogOptions, VerifyOptions,
};
use proptest::prelude::*;

const REPLAY_REFUSES: &str = "do not match the signed checkpoint";

fn opts(dir: &Path) -> LogOptions {
    let mut o = LogOptions::new(dir);
    o.origin = "fast-open.example/audit".into();
    o.checkpoint_every = 1000;
    o.checkpoint_interval = Duration::from_secs(3600);
    o.segment_size = 256 << 10;
    o
}

fn ev(i: u64) -> Event {
    Event::new(Action::Run, Decision::Allow)
        .reason(format!("record number {i}"))
        .detail("i", i)
}

/// A directory on tmpfs when there is one (the logs here take thousands of durable appends).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// Appends `n` records with four writers.
fn fill(log: &Arc<AuditLog>, n: u64) {
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let log = Arc::clone(log);
            std::thread::spawn(move || {
                for i in (t..n).step_by(4) {
                    log.record(ev(i)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// A closed log of `n` records, checkpointed at `n`.
fn make(dir: &Path, n: u64) {
    let log = Arc::new(AuditLog::open(opts(dir)).unwrap());
    fill(&log, n);
    Arc::try_unwrap(log).unwrap().close().unwrap();
}

fn trusted(dir: &Path) -> VerifyOptions {
    VerifyOptions {
        key: Some(store::read_vkey(dir).unwrap()),
        old_checkpoint: None,
    }
}

fn sealed(dir: &Path) -> Vec<PathBuf> {
    segments(dir)
        .unwrap()
        .into_iter()
        .filter(|s| s.first_seq.is_some())
        .map(|s| s.path)
        .collect()
}

/// Flips the case of one letter in the reason of record `seq` (in the first sealed segment);
/// flipping again restores it.
fn flip(dir: &Path, seq: u64) {
    let path = &sealed(dir)[0];
    let mut b = fs::read(path).unwrap();
    let start: usize = b
        .split(|&c| c == b'\n')
        .take(seq as usize)
        .map(|l| l.len() + 1)
        .sum();
    // The "r" of "record number" (or of "Record number", once flipped).
    let at = start
        + b[start..]
            .windows(12)
            .position(|w| w == b"ecord number")
            .unwrap();
    b[at - 1] ^= 0x20;
    fs::write(path, b).unwrap();
}

fn open(dir: &Path) -> Result<AuditLog, String> {
    AuditLog::open(opts(dir)).map_err(|e| e.to_string())
}

fn hint(dir: &Path) -> PathBuf {
    dir.join(store::STATE)
}

#[test]
fn a_big_log_reopens_without_replaying_it() {
    let d = scratch();
    let dir = d.path();
    make(dir, 20_000);
    assert!(sealed(dir).len() >= 2, "{:?}", segments(dir).unwrap());
    assert!(hint(dir).is_file());

    // The reopened writer continues the sequence, and its checkpoints verify.
    let log = open(dir).unwrap();
    assert_eq!(log.size(), 20_000);
    for i in 20_000..20_005 {
        assert_eq!(log.record(ev(i)).unwrap(), i);
    }
    let note = log.checkpoint().unwrap();
    assert!(
        note.starts_with("fast-open.example/audit\n20005\n"),
        "{note}"
    );
    log.close().unwrap();
    let rep = verify(dir, &trusted(dir)).unwrap();
    assert_eq!(
        (rep.records, rep.checkpoint_size, rep.unsigned),
        (20_005, Some(20_005), 0)
    );

    // Resuming reads no sealed segment: a record changed there does not stop the open ...
    flip(dir, 7);
    let log = open(dir).expect("resumes from the hint");
    assert_eq!(log.size(), 20_005);
    assert_eq!(log.record(ev(20_005)).unwrap(), 20_005);
    log.close().unwrap();
    // ... but verification still names it.
    let e = verify(dir, &trusted(dir)).unwrap_err();
    assert_eq!(e.first_bad_seq(), Some(7), "{e}");

    // Without a usable hint the open replays the log and refuses it.
    fs::remove_file(hint(dir)).unwrap();
    let err = open(dir).unwrap_err();
    assert!(err.contains(REPLAY_REFUSES), "{err}");
    fs::write(hint(dir), b"perry-audit writer.state 1\nsize 20006\n").unwrap();
    let err = open(dir).unwrap_err();
    assert!(err.contains(REPLAY_REFUSES), "{err}");

    // With the record given back, the replay accepts the log and leaves a fresh hint, which the
    // next open resumes from (again not reading the sealed segment).
    flip(dir, 7);
    open(dir).unwrap().close().unwrap();
    flip(dir, 7);
    assert_eq!(open(dir).expect("resumes again").size(), 20_006);
    flip(dir, 7);
    verify(dir, &trusted(dir)).unwrap();
}

#[test]
fn a_stale_or_broken_hint_falls_back_to_a_full_replay() {
    let d = scratch();
    let dir = d.path();
    make(dir, 3000);
    let older = fs::read(hint(dir)).unwrap();
    let log = open(dir).unwrap();
    for i in 3000..3100 {
        log.record(ev(i)).unwrap();
    }
    log.close().unwrap();
    let good = fs::read(hint(dir)).unwrap();
    let good_text = String::from_utf8(good.clone()).unwrap();
    let stack = good_text.lines().nth(2).unwrap();
    let digit = stack.len() - 1;
    let other = if stack.ends_with('0') { "1" } else { "0" };
    let wrong_root = good_text.replace(stack, &format!("{}{other}", &stack[..digit]));
    let mut noise = 0x2545_f491_4f6c_dd1du64;
    let random: Vec<u8> = (0..300)
        .map(|_| {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            noise as u8
        })
        .collect();
    let broken: [(&str, &[u8]); 4] = [
        ("a hint of an older checkpoint (another size)", &older),
        (
            "a hint whose tree misses the signed root",
            wrong_root.as_bytes(),
        ),
        ("random bytes", &random),
        ("an empty file", b""),
    ];

    flip(dir, 3);
    open(dir).expect("the good hint resumes").close().unwrap();
    for (what, bytes) in broken {
        fs::write(hint(dir), bytes).unwrap();
        let err = open(dir).expect_err(what);
        assert!(err.contains(REPLAY_REFUSES), "{what}: {err}");
    }
    // The active segment replaced by a copy of itself (another inode): the hint is refused.
    fs::write(hint(dir), &good).unwrap();
    let active = dir.join(store::ACTIVE);
    fs::copy(&active, dir.join("copy")).unwrap();
    fs::rename(dir.join("copy"), &active).unwrap();
    let err = open(dir).expect_err("replaced active segment");
    assert!(err.contains(REPLAY_REFUSES), "{err}");

    // On an untouched log, none of these hints stops an open: the replay accepts the log.
    flip(dir, 3);
    for (what, bytes) in broken {
        fs::write(hint(dir), bytes).unwrap();
        let log = open(dir).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(log.size(), 3100, "{what}");
        log.close().unwrap();
    }

    // The active segment cut short of what the hint covers: the replay names the loss.
    let len = fs::metadata(&active).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = open(dir).unwrap_err();
    assert!(
        err.contains("records from seq") && err.contains("on are missing"),
        "{err}"
    );
}

#[test]
fn records_a_killed_writer_appended_after_its_last_checkpoint_are_picked_up() {
    let d = scratch();
    let dir = d.path();
    let log = Arc::new(AuditLog::open(opts(dir)).unwrap());
    fill(&log, 3000);
    log.checkpoint().unwrap();
    for i in 3000..3037 {
        log.record(ev(i)).unwrap();
    }
    // Killed before its exit checkpoint, in the middle of writing a record.
    std::mem::forget(log);
    let torn = br#"{"seq":3037,"time":"2026-01-01T00:00:00.000000Z","actor":{"ui"#;
    let active = dir.join(store::ACTIVE);
    let mut bytes = fs::read(&active).unwrap();
    bytes.extend_from_slice(torn);
    fs::write(&active, bytes).unwrap();

    flip(dir, 3);
    let log = open(dir).expect("resumes from the hint");
    assert_eq!(log.size(), 3037);
    assert_eq!(log.record(ev(3037)).unwrap(), 3037);
    let resumed = log.checkpoint().unwrap();
    log.close().unwrap();
    flip(dir, 3);

    // The same checkpoint as after a full replay (Ed25519 signatures are deterministic).
    fs::remove_file(hint(dir)).unwrap();
    let log = open(dir).unwrap();
    assert_eq!(log.checkpoint().unwrap(), resumed);
    log.close().unwrap();
    let rep = verify(dir, &trusted(dir)).unwrap();
    assert_eq!((rep.records, rep.checkpoint_size), (3038, Some(3038)));
    assert!(resumed.contains(&format!("\n{}\n", rep.root)), "{resumed}");
    // The torn line went to quarantine, byte for byte, as a replay would have put it.
    assert_eq!(rep.quarantined.len(), 1);
    assert_eq!(rep.quarantined[0].seq, 3037);
    assert_eq!(fs::read(&rep.quarantined[0].path).unwrap(), torn);
}

/// A small closed log (a few sealed segments) and its hint.
fn small_log() -> (tempfile::TempDir, Vec<u8>) {
    let d = scratch();
    let mut o = opts(d.path());
    o.segment_size = 2000;
    let log = AuditLog::open(o).unwrap();
    for i in 0..20 {
        log.record(ev(i)).unwrap();
    }
    log.close().unwrap();
    let good = fs::read(hint(d.path())).unwrap();
    (d, good)
}

/// Opens the log under `bytes` as its hint, appends one record and closes: the writer must find
/// all 20 records, and its checkpoint must verify (so the tree it extended was the right one).
fn appends_under_hint(d: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    fs::write(hint(d), bytes).unwrap();
    let log = open(d).unwrap();
    prop_assert_eq!(log.size(), 20);
    prop_assert_eq!(log.record(ev(20)).unwrap(), 20);
    log.close().unwrap();
    let rep = verify(d, &trusted(d)).unwrap();
    prop_assert_eq!((rep.records, rep.checkpoint_size), (21, Some(21)));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn no_hint_bytes_stop_an_open_or_change_the_tree(
        junk in proptest::collection::vec(any::<u8>(), 0..400),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let (d, _) = small_log();
        appends_under_hint(d.path(), &junk)?;
        let (d, mut near) = small_log();
        for (at, byte) in edits {
            let i = at.index(near.len());
            near[i] = byte;
        }
        appends_under_hint(d.path(), &near)?;
    }
}
