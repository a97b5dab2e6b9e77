//! The writer-state hint: its format is strict and never panics, and each check of [`resume`]
//! refuses the stale state it is there for (after which the writer replays the log, and saves a
//! fresh state when the replay ends at the checkpoint).

use super::*;
use crate::error::AuditError;
use crate::{Action, AuditLog, AuditSink, Decision, Event, LogOptions};
use proptest::prelude::*;

const N: u64 = 40;

fn opts(dir: &Path) -> LogOptions {
    let mut o = LogOptions::new(dir);
    o.origin = "state.example/audit".into();
    o.checkpoint_every = 7;
    o.segment_size = 2000;
    o
}

fn ev(i: u64) -> Event {
    Event::new(Action::Run, Decision::Allow)
        .reason(format!("record number {i}"))
        .detail("i", i)
}

/// A closed log of `n` records, checkpointed at `n`: several sealed segments, and the last ten
/// records in the active one (appended with rotation off).
fn make(n: u64) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let mut o = opts(d.path());
    for (from, to) in [(0, n - 10), (n - 10, n)] {
        let log = AuditLog::open(o.clone()).unwrap();
        for i in from..to {
            log.record(ev(i)).unwrap();
        }
        log.close().unwrap();
        o.segment_size = u64::MAX;
    }
    d
}

/// What [`resume`] makes of the directory as it is now.
fn check(dir: &Path) -> Result<WriterState, Stale> {
    let active = File::open(dir.join(store::ACTIVE)).unwrap();
    let leaves = File::open(dir.join(store::LEAVES)).unwrap();
    resume(dir, &active, &leaves, &store::read_vkey(dir).unwrap())
}

fn saved(dir: &Path) -> WriterState {
    WriterState::parse(&fs::read(dir.join(store::STATE)).unwrap()).unwrap()
}

fn put(dir: &Path, st: &WriterState) {
    fs::write(dir.join(store::STATE), st.to_text()).unwrap();
}

/// Opens and closes a writer; returns the size it found.
fn reopen(dir: &Path) -> Result<u64, AuditError> {
    let log = AuditLog::open(opts(dir))?;
    let n = log.size();
    log.close()?;
    Ok(n)
}

/// The state is refused for `why`, a writer still opens (by replaying) and the replay leaves a
/// state that is used again.
fn refused_then_healed(dir: &Path, why: Stale) {
    assert_eq!(check(dir).unwrap_err(), why);
    assert_eq!(reopen(dir).unwrap(), N);
    assert_eq!(check(dir).unwrap().tree.size(), N);
}

fn checkpoint(dir: &Path) -> Checkpoint {
    let note = fs::read_to_string(dir.join(store::CHECKPOINT)).unwrap();
    Checkpoint::parse_text(&crate::Note::parse(&note).unwrap().text).unwrap()
}

fn active_len(dir: &Path) -> u64 {
    fs::metadata(dir.join(store::ACTIVE)).unwrap().len()
}

#[test]
fn a_closed_log_resumes_from_its_state() {
    let d = make(N);
    let sealed = store::segments(d.path())
        .unwrap()
        .iter()
        .filter_map(|s| s.first_seq)
        .collect::<Vec<_>>();
    assert!(sealed.len() >= 3, "{sealed:?}");
    let st = check(d.path()).unwrap();
    let cp = checkpoint(d.path());
    assert_eq!((st.tree.size(), st.tree.root()), (cp.size, cp.root));
    assert_eq!(cp.size, N);
    assert!(st.seg_first > *sealed.last().unwrap());
    assert_eq!(st.len, active_len(d.path()));
    let text = fs::read_to_string(d.path().join(store::ACTIVE)).unwrap();
    let last_line = text.lines().last().unwrap();
    assert_eq!(st.last, Some(leaf_hash(last_line.as_bytes())));
}

#[test]
fn a_state_saved_right_after_a_rotation_covers_an_empty_active_segment() {
    let d = tempfile::tempdir().unwrap();
    let mut o = opts(d.path());
    o.checkpoint_every = 1;
    o.segment_size = 1;
    let log = AuditLog::open(o.clone()).unwrap();
    for i in 0..5 {
        log.record(ev(i)).unwrap();
    }
    log.close().unwrap();
    assert_eq!(active_len(d.path()), 0);
    let st = check(d.path()).unwrap();
    assert_eq!(
        (st.tree.size(), st.seg_first, st.len, st.last),
        (5, 5, 0, None)
    );
    let log = AuditLog::open(o).unwrap();
    assert_eq!(log.record(ev(5)).unwrap(), 5);
    log.close().unwrap();
    let rep = crate::verify(d.path(), &Default::default()).unwrap();
    assert_eq!((rep.records, rep.checkpoint_size), (6, Some(6)));
}

#[test]
fn state_text_round_trips() {
    let mut tree = CompactTree::new();
    for size in 0..70u64 {
        let seg_first = size / 2;
        let st = WriterState {
            tree: tree.clone(),
            seg_first,
            ino: (1 << 40) | size,
            len: (size - seg_first) * 100,
            last: (size > seg_first).then_some([size as u8; 32]),
        };
        let back = WriterState::parse(st.to_text().as_bytes()).unwrap();
        assert_eq!(back.to_text(), st.to_text());
        assert_eq!(back.tree.root(), tree.root());
        assert_eq!(
            (back.seg_first, back.ino, back.len, back.last),
            (st.seg_first, st.ino, st.len, st.last)
        );
        tree.push(leaf_hash(&size.to_be_bytes()));
    }
}

#[test]
fn parse_is_strict() {
    let d = make(N);
    let good = fs::read_to_string(d.path().join(store::STATE)).unwrap();
    assert!(WriterState::parse(good.as_bytes()).is_some());
    let st = saved(d.path());
    let size = st.tree.size();
    let last = good.lines().last().unwrap().to_string();
    let stack = good.lines().nth(2).unwrap().to_string();
    let bad: Vec<String> = vec![
        String::new(),
        good.trim_end().to_string(),
        format!("{good}\n"),
        format!("{good}extra\n"),
        good.replace("writer.state 1", "writer.state 2"),
        good.replace(&format!("size {size}\n"), &format!("size 0{size}\n")),
        good.replace(&format!("size {size}\n"), &format!("size  {size}\n")),
        good.replace(&format!("size {size}\n"), &format!("size +{size}\n")),
        good.replace(&format!("size {size}\n"), &format!("size {size} \n")),
        good.replace(&format!("size {size}\n"), "size 18446744073709551616\n"),
        // Another root count than set bits of the size.
        good.replace(&format!("size {size}\n"), &format!("size {}\n", size + 1)),
        good.replace(&stack, &format!("{stack} {}", "ab".repeat(32))),
        good.replace(&stack, &stack.to_uppercase().replace("STACK", "stack")),
        good.replace(&stack, &stack[..stack.len() - 1]),
        good.replace(&stack, &stack.replace(' ', "  ")),
        good.replace(&last, "last -"),
        good.replace(&last, &format!("{last}0")),
        good.replace(&format!("len {}\n", st.len), "len 0\n"),
        good.replace(
            &format!("seg_first {}\n", st.seg_first),
            &format!("seg_first {}\n", size + 1),
        ),
        good.replace(&format!("ino {}\n", st.ino), "ino \n"),
        good.replace('\n', "\r\n"),
    ];
    for b in bad {
        assert!(WriterState::parse(b.as_bytes()).is_none(), "accepted:\n{b}");
    }
}

#[test]
fn a_missing_state_is_refused_and_rewritten_by_the_replay() {
    let d = make(N);
    fs::remove_file(d.path().join(store::STATE)).unwrap();
    refused_then_healed(d.path(), Stale::Missing);
}

#[test]
fn garbage_state_is_refused() {
    let d = make(N);
    for junk in [
        &b""[..],
        b"\0\0\0\0",
        b"perry-audit writer.state 1\n",
        &[0xff; 9000],
    ] {
        fs::write(d.path().join(store::STATE), junk).unwrap();
        refused_then_healed(d.path(), Stale::Malformed);
    }
}

#[test]
fn a_state_without_a_checkpoint_is_refused() {
    let d = make(N);
    fs::remove_file(d.path().join(store::CHECKPOINT)).unwrap();
    // The replay finds no checkpoint; closing signs one, with a new state.
    refused_then_healed(d.path(), Stale::NoCheckpoint);
}

#[test]
fn a_checkpoint_not_signed_by_the_writers_key_is_refused() {
    let d = make(N);
    let text = checkpoint(d.path()).to_text();
    fs::write(d.path().join(store::CHECKPOINT), other_signed(&text)).unwrap();
    assert_eq!(check(d.path()).unwrap_err(), Stale::Signature);
    fs::write(d.path().join(store::CHECKPOINT), b"not a note").unwrap();
    assert_eq!(check(d.path()).unwrap_err(), Stale::Signature);
    // A replay does not check signatures (verification does): it opens as before.
    fs::write(d.path().join(store::CHECKPOINT), other_signed(&text)).unwrap();
    assert_eq!(check(d.path()).unwrap_err(), Stale::Signature);
    assert_eq!(reopen(d.path()).unwrap(), N);
}

fn other_signed(text: &str) -> String {
    let other =
        crate::NoteSigner::from_pkcs8("state.example/audit", crate::NoteSigner::generate_pkcs8());
    other.unwrap().sign(text)
}

#[test]
fn a_state_of_another_size_than_the_checkpoint_is_refused() {
    let d = make(N);
    let mut st = saved(d.path());
    st.tree.push([7; 32]);
    put(d.path(), &st);
    refused_then_healed(d.path(), Stale::Size);
}

#[test]
fn a_state_whose_tree_misses_the_signed_root_is_refused() {
    let d = make(N);
    let st = saved(d.path());
    let mut stack = st.tree.stack().to_vec();
    stack[0][3] ^= 1;
    let forged = WriterState {
        tree: CompactTree::from_parts(st.tree.size(), stack).unwrap(),
        ..st
    };
    put(d.path(), &forged);
    refused_then_healed(d.path(), Stale::Root);
}

#[test]
fn a_replaced_active_segment_is_refused() {
    let d = make(N);
    let active = d.path().join(store::ACTIVE);
    let copy = d.path().join("copy.tmp");
    fs::copy(&active, &copy).unwrap();
    fs::rename(&copy, &active).unwrap();
    refused_then_healed(d.path(), Stale::Replaced);
}

#[test]
fn a_shortened_active_segment_is_refused_and_the_replay_names_the_loss() {
    let d = make(N);
    let len = saved(d.path()).len;
    OpenOptions::new()
        .write(true)
        .open(d.path().join(store::ACTIVE))
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    assert_eq!(check(d.path()).unwrap_err(), Stale::Short);
    let err = reopen(d.path()).unwrap_err().to_string();
    assert!(
        err.contains(&format!("records from seq {} on are missing", N - 1)),
        "{err}"
    );
}

#[test]
fn a_state_naming_another_last_record_is_refused() {
    let d = make(N);
    let good = saved(d.path());
    // Another leaf hash.
    put(
        d.path(),
        &WriterState {
            last: Some([9; 32]),
            ..good.clone()
        },
    );
    refused_then_healed(d.path(), Stale::LastRecord);
    // A length that ends mid-line.
    put(
        d.path(),
        &WriterState {
            len: good.len - 5,
            ..good.clone()
        },
    );
    refused_then_healed(d.path(), Stale::LastRecord);
    // The last covered record changed in place: refused, and the replay refuses the log.
    let active = d.path().join(store::ACTIVE);
    let text = fs::read_to_string(&active).unwrap();
    let at = text.rfind("record number").unwrap();
    let mut b = text.into_bytes();
    b[at] = b'R';
    fs::write(&active, &b).unwrap();
    assert_eq!(check(d.path()).unwrap_err(), Stale::LastRecord);
    let err = reopen(d.path()).unwrap_err().to_string();
    assert!(err.contains("do not match the signed checkpoint"), "{err}");
}

#[test]
fn a_state_with_another_first_seq_is_refused() {
    let d = make(N);
    let st = saved(d.path());
    assert!(st.seg_first > 0 && st.tree.size() > st.seg_first);
    put(
        d.path(),
        &WriterState {
            seg_first: st.seg_first - 1,
            ..st
        },
    );
    refused_then_healed(d.path(), Stale::FirstRecord);
}

#[test]
fn sealed_segments_that_do_not_fit_are_refused() {
    let d = make(N);
    let st = saved(d.path());
    let segs = store::segments(d.path()).unwrap();
    let sealed: Vec<_> = segs.iter().filter(|s| s.first_seq.is_some()).collect();
    // A sealed segment named at or after the active segment's first seq.
    let stray = d.path().join(store::sealed_name(st.seg_first));
    fs::write(&stray, b"").unwrap();
    assert_eq!(check(d.path()).unwrap_err(), Stale::Sealed);
    fs::remove_file(&stray).unwrap();
    assert!(check(d.path()).is_ok());
    // The first sealed segment archived away: a replay refuses the log, as before.
    let away = d.path().join("archived.jsonl");
    fs::rename(&sealed[0].path, &away).unwrap();
    assert_eq!(check(d.path()).unwrap_err(), Stale::Sealed);
    let err = reopen(d.path()).unwrap_err().to_string();
    assert!(err.contains("segment starts at seq"), "{err}");
    fs::rename(&away, &sealed[0].path).unwrap();
    // No sealed segments at all although the active one does not start at seq 0.
    for s in &sealed {
        fs::remove_file(&s.path).unwrap();
    }
    assert_eq!(check(d.path()).unwrap_err(), Stale::Sealed);
}

#[test]
fn a_short_leaf_hash_file_is_refused_and_rebuilt_by_the_replay() {
    let d = make(N);
    let leaves = d.path().join(store::LEAVES);
    OpenOptions::new()
        .write(true)
        .open(&leaves)
        .unwrap()
        .set_len(N * 32 - 1)
        .unwrap();
    refused_then_healed(d.path(), Stale::Leaves);
    assert_eq!(fs::metadata(&leaves).unwrap().len(), N * 32);
}

fn valid_text() -> String {
    let mut tree = CompactTree::new();
    for i in 0..45u64 {
        tree.push(leaf_hash(&i.to_be_bytes()));
    }
    WriterState {
        tree,
        seg_first: 40,
        ino: 1234,
        len: 500,
        last: Some([0xab; 32]),
    }
    .to_text()
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
        let _ = WriterState::parse(&bytes);
    }

    #[test]
    fn parse_never_panics_on_near_misses(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut b = valid_text().into_bytes();
        for (at, byte) in edits {
            let i = at.index(b.len());
            b[i] = byte;
        }
        let _ = WriterState::parse(&b);
        let _ = WriterState::parse(&b[..cut.index(b.len() + 1)]);
    }
}
