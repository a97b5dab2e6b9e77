//! perry-audit: the tamper-evident audit log of perry-sandbox.
//!
//! # Why
//!
//! Every security decision perry-sandbox makes (an image verified or refused, a run allowed or
//! denied, a capability invoked, a configuration loaded) must be on a record that nobody —
//! including root on the host — can alter, reorder or truncate without a reviewer noticing. A
//! plain log file cannot promise that; a Merkle tree with signed checkpoints can:
//!
//! * **Records** are canonical JSON, one per line in `<audit dir>/log.jsonl` (fixed key order, no
//!   insignificant whitespace, `null` for absent values, `details` keys sorted). Record `seq` is
//!   leaf index `seq` of an RFC 6962 / RFC 9162 tree whose leaf hash is
//!   SHA-256(0x00 || line without its newline).
//! * **Checkpoints** are C2SP `tlog-checkpoint` signed notes (origin, size, base64 root) signed
//!   with Ed25519 (`ring`). They are written every `checkpoint_every` records, once unsigned
//!   records are `checkpoint_interval` old, on demand, and when the writer closes. The key is
//!   generated on first use into `signing-key.pk8` (0600), held in zeroizing memory and never
//!   printed; `key.vkey` publishes the note verifier key.
//! * **Durability before action**: [`AuditSink::record`] returns only after `fdatasync`.
//!   Concurrent writers in one process share one sync (group commit: whoever finds no flush in
//!   progress writes everyone's queued records in one `write` + `fdatasync`; when syncs are slow
//!   it first waits, at most half a sync, for as many records as recent batches held, so
//!   batches do not alternate between full and nearly empty); writers in different processes
//!   serialise on an `flock` of `log.lock` and first read what the others appended.
//! * **Crash safety**: a write is one `write(2)` of whole lines; a crash can leave only a torn last
//!   line. The next writer moves those bytes into `quarantine/` (fsync'd) before truncating them
//!   away, so they are neither merged into the tree nor silently dropped; `audit verify` lists
//!   them.
//! * **Opening costs O(records since the latest checkpoint)**, not O(log): with each checkpoint
//!   the writer saves `writer.state` (its compact tree and where the active segment stood), and
//!   the next open resumes from it after checking it against the signed checkpoint and the
//!   segment files, reading only the records appended since. A missing or stale `writer.state`
//!   costs one full replay, never an error or a different tree. Resuming does not re-read
//!   records the checkpoint already covers, so a change to one of them is left to `audit verify`
//!   to find (a full replay would also refuse to append to such a log).
//! * **Verification** ([`verify()`]) needs only the log, a checkpoint and the public key: it
//!   recomputes the tree, checks the checkpoint signature and root, and with an older checkpoint a
//!   reviewer kept, checks an RFC 6962 consistency proof — which catches a log replaced wholesale
//!   by another internally valid one. Errors name the file, line and first bad record. Records
//!   under a verified signed root are authenticated by it; the full canonical-JSON parse runs on
//!   the records no checkpoint covers yet, and on failure to name the first bad record, which
//!   keeps verification close to the cost of hashing.
//!
//! # Rotation
//!
//! When `log.jsonl` reaches `segment_size` bytes, the writer (holding the lock) renames it to
//! `log-<seq of its first record, 20 digits>.jsonl` and starts a new `log.jsonl`. Segments are
//! only a storage split: seqs continue across them and the Merkle tree spans all of them in name
//! order, so checkpoints and proofs are unaffected. Verification checks that each sealed
//! segment's name matches the seq where it continues the log, so a missing, renamed or
//! reordered segment is named. Archiving old segments elsewhere is safe as long as they are
//! given back (unrenamed) for verification. Tested in `tests/log.rs`
//! (`rotation_into_segments_keeps_verification_and_proofs`): verification, an older
//! checkpoint's consistency and inclusion proofs across segments, a reopened writer, and a
//! segment archived away or renamed.
//!
//! # Limits
//!
//! Records appended after the latest checkpoint are protected only once the next checkpoint is
//! signed (at most `checkpoint_every` records or `checkpoint_interval` later): until then, an
//! attacker who can write the directory could drop them. `leaves.bin` keeps each record's leaf
//! hash as written so verification can name a modified record exactly; it is a hint (not fsync'd,
//! not trusted for the verdict), and without it a modification is still detected, by root.
//!
//! # Example
//!
//! ```
//! use perry_audit::{Action, AuditLog, AuditSink, Correlation, Decision, Event, LogOptions};
//! let dir = tempfile::tempdir().unwrap();
//! let log = AuditLog::open(LogOptions::new(dir.path())).unwrap();
//! let id = Correlation::new();
//! let seq = log
//!     .record(
//!         Event::new(Action::Verify, Decision::Allow)
//!             .image("cgr.dev/chainguard/git:latest")
//!             .reason("keyless signature matched policy[0]")
//!             .correlation(&id),
//!     )
//!     .unwrap();
//! assert_eq!(seq, 0);
//! log.close().unwrap();
//! let report = perry_audit::verify(dir.path(), &Default::default()).unwrap();
//! assert_eq!(report.records, 1);
//! assert_eq!(report.checkpoint_size, Some(1));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod action;
mod error;
mod log;
pub mod merkle;
pub mod note;
pub mod query;
mod record;
mod state;
pub mod store;
pub mod timefmt;
mod verify;

pub use action::Action;
pub use error::AuditError;
pub use log::{AuditLog, AuditSink, LogOptions};
pub use note::{Checkpoint, Note, NoteError, NoteSigner, NoteVerifier};
pub use query::Filter;
pub use record::{peek_seq, Actor, Correlation, Decision, Event, Policy, Record, Subject, Via};
pub use verify::{prove, verify, InclusionProof, LogVerifyError, VerifyOptions, VerifyReport};

/// Lowercase hex SHA-256 of `bytes`, e.g. to record which configuration file was in force
/// (`config_load` records carry the file's digest so a reviewer can match it to a copy).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Lowercase hex of `bytes`: the one encoder for digests, key ids and hashes in this crate.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Loads (generating on first use) the signing key of an audit directory and returns its public
/// verifier key, for `audit key`. Takes the writer lock so two first uses cannot race.
pub fn verifier_key(dir: &std::path::Path, origin: &str) -> Result<NoteVerifier, AuditError> {
    store::ensure_dir(dir)?;
    let lock = store::lock(dir)?;
    let r = store::load_or_create_key(dir, origin).map(|s| s.verifier().clone());
    store::unlock(&lock);
    r
}
