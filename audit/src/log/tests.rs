//! Resuming from the writer-state hint leaves the writer exactly as a full replay would, and a
//! damaged tail after the checkpoint is reported as a replay reports it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;

use super::*;
use crate::record::Decision;
use crate::state::Stale;
use crate::state::{self, WriterState};
use crate::Action;

fn opts(dir: &Path) -> LogOptions {
    let mut o = LogOptions::new(dir);
    o.origin = "resume.example/audit".into();
    // ~390-byte records: two sealed segments by record 60, and no rotation in the next five.
    o.segment_size = 10_000;
    o.checkpoint_every = 1000;
    o.checkpoint_interval = Duration::from_secs(3600);
    o
}

fn ev(i: u64) -> Event {
    Event::new(Action::Run, Decision::Allow).detail("i", i)
}

/// Everything a writer recovers on open but the active segment's inode (a copy is another file).
type Recovered = (u64, Hash, u64, bool, u64, u64, Option<Hash>);

fn recovered(log: &AuditLog) -> Recovered {
    let w = lock(&log.shared.writer);
    (
        w.tree.size(),
        w.tree.root(),
        w.checkpointed,
        w.unsigned_since.is_some(),
        w.seg_first,
        w.len,
        w.last_leaf,
    )
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn resume_of(dir: &Path) -> Result<WriterState, Stale> {
    let active = File::open(dir.join(store::ACTIVE)).unwrap();
    let leaves = File::open(dir.join(store::LEAVES)).unwrap();
    state::resume(dir, &active, &leaves, &store::read_vkey(dir).unwrap())
}

/// A log checkpointed at 60 records, then `unsigned` more appended by a writer that never closed
/// (as if killed before its exit checkpoint).
fn left_by_a_killed_writer(dir: &Path, unsigned: u64) {
    let log = AuditLog::open(opts(dir)).unwrap();
    for i in 0..60 {
        log.record(ev(i)).unwrap();
    }
    log.checkpoint().unwrap();
    for i in 60..60 + unsigned {
        log.record(ev(i)).unwrap();
    }
    std::mem::forget(log);
}

#[test]
fn resuming_leaves_the_writer_as_a_replay_would() {
    for unsigned in [0, 5] {
        let d = tempfile::tempdir().unwrap();
        left_by_a_killed_writer(d.path(), unsigned);
        // In a copy every file is another inode: its hint is refused and the writer replays.
        let c = tempfile::tempdir().unwrap();
        copy_dir(d.path(), c.path());
        assert!(resume_of(d.path()).is_ok());
        assert_eq!(resume_of(c.path()).unwrap_err(), Stale::Replaced);
        let fast = AuditLog::open(opts(d.path())).unwrap();
        let slow = AuditLog::open(opts(c.path())).unwrap();
        let got = recovered(&fast);
        assert_eq!(got, recovered(&slow));
        assert_eq!(got.0, 60 + unsigned);
        assert_eq!(got.2, 60, "checkpointed");
        assert_eq!(got.3, unsigned > 0, "unsigned_since");
        assert!(got.4 > 0, "several segments");
        fast.close().unwrap();
        slow.close().unwrap();
        // Both closed with (or kept) the same checkpoint, and the next open resumes.
        let note = |dir: &Path| fs::read_to_string(dir.join(store::CHECKPOINT)).unwrap();
        assert_eq!(note(d.path()), note(c.path()));
        assert_eq!(resume_of(d.path()).unwrap().tree.size(), 60 + unsigned);
        assert_eq!(resume_of(c.path()).unwrap().tree.size(), 60 + unsigned);
    }
}

#[test]
fn a_damaged_tail_is_reported_as_a_replay_reports_it() {
    let d = tempfile::tempdir().unwrap();
    left_by_a_killed_writer(d.path(), 3);
    // A whole line after the checkpoint that is not the next record.
    let active = d.path().join(store::ACTIVE);
    let text = fs::read_to_string(&active).unwrap();
    let last = text.lines().last().unwrap();
    let dup = format!("{last}\n");
    OpenOptions::new()
        .append(true)
        .open(&active)
        .and_then(|mut f| f.write_all(dup.as_bytes()))
        .unwrap();
    assert!(resume_of(d.path()).is_ok());
    let with_hint = AuditLog::open(opts(d.path())).unwrap_err();
    fs::remove_file(d.path().join(store::STATE)).unwrap();
    let replayed = AuditLog::open(opts(d.path())).unwrap_err();
    assert_eq!(with_hint, replayed);
    assert!(
        with_hint
            .to_string()
            .contains("found seq 62 where seq 63 belongs"),
        "{with_hint}"
    );
}
