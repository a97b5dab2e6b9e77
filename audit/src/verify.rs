//! Independent verification of an audit directory, and inclusion proofs for reviewers.
//!
//! Verification trusts nothing in the directory but the records themselves: it recomputes every
//! leaf hash and the tree, checks the latest checkpoint's signature against a key the reviewer
//! supplies (or, failing that, the published `key.vkey`), checks the signed root, and with an
//! older checkpoint the reviewer kept, proves the log is an append-only extension of it.

use std::fs;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Serialize;

use crate::error::AuditError;
use crate::hex;
use crate::merkle::{self, leaf_hash, Hash};
use crate::note::{Checkpoint, NoteVerifier};
use crate::record::Record;
use crate::store::{self, Quarantined};

/// Why verification failed. Every variant names the first bad record (or the first missing one)
/// and the file it is in.
#[derive(Debug, thiserror::Error)]
pub enum LogVerifyError {
    /// The directory could not be read.
    #[error(transparent)]
    Io(#[from] AuditError),
    /// A record line is malformed, out of order, missing or modified.
    #[error("{}:{line}: first bad record is seq {seq}: {msg}", path.display())]
    Record {
        /// The segment file.
        path: PathBuf,
        /// 1-based line number in it.
        line: u64,
        /// The seq that belongs at that line.
        seq: u64,
        /// What is wrong.
        msg: String,
    },
    /// Records a checkpoint covers are gone.
    #[error("{}: the log ends after {records} records but the checkpoint covers {covered}: records were removed from the end; first missing record is seq {records}", path.display())]
    Truncated {
        /// The checkpoint that proves it.
        path: PathBuf,
        /// Records present.
        records: u64,
        /// Records the checkpoint covers.
        covered: u64,
    },
    /// The records do not hash to the signed root.
    #[error("{}: the first {size} records do not hash to the signed root: a record at or before seq {} was changed or replaced", path.display(), size.saturating_sub(1))]
    RootMismatch {
        /// The checkpoint.
        path: PathBuf,
        /// Its tree size.
        size: u64,
    },
    /// The log is not an append-only extension of an older checkpoint.
    #[error("{}: the log is not an extension of this older checkpoint (size {old_size}): records between seq 0 and seq {} were changed or the log was replaced; first bad record is at or before seq {}", path.display(), old_size.saturating_sub(1), old_size.saturating_sub(1))]
    Inconsistent {
        /// The older checkpoint.
        path: PathBuf,
        /// Its tree size.
        old_size: u64,
    },
    /// A checkpoint is unreadable or not signed by the trusted key.
    #[error("{}: {msg}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
}

impl LogVerifyError {
    /// The seq of the first bad or missing record, where one can be named exactly.
    pub fn first_bad_seq(&self) -> Option<u64> {
        match self {
            LogVerifyError::Record { seq, .. } => Some(*seq),
            LogVerifyError::Truncated { records, .. } => Some(*records),
            _ => None,
        }
    }
}

/// What to verify against.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// The trusted verifier key; default: the directory's `key.vkey` (which an attacker with
    /// write access could replace — reviewers should pass the key they hold).
    pub key: Option<NoteVerifier>,
    /// An older signed checkpoint the reviewer kept, and where it came from.
    pub old_checkpoint: Option<(PathBuf, String)>,
}

/// The result of a successful verification.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// Records in the log.
    pub records: u64,
    /// Segment files read.
    pub segments: usize,
    /// Root over all records (base64).
    pub root: String,
    /// Size covered by the latest signed checkpoint, if there is one.
    pub checkpoint_size: Option<u64>,
    /// Records after the latest checkpoint (protected only by the next one).
    pub unsigned: u64,
    /// The verifier key used.
    pub key: String,
    /// Whether that key was supplied by the caller (rather than read from the directory).
    pub key_given: bool,
    /// Size of the older checkpoint proven consistent, if one was given.
    pub old_checkpoint_size: Option<u64>,
    /// Bytes of a torn last line not yet quarantined (the next writer will move them).
    pub torn_tail_bytes: u64,
    /// Torn lines already quarantined.
    pub quarantined: Vec<Quarantined>,
    /// Things a reviewer should know that do not fail verification.
    pub warnings: Vec<String>,
}

struct Line<'a> {
    seg: usize,
    line: u64,
    bytes: &'a [u8],
}

/// What the fast pass learns about a line: its leaf hash and the seq it claims.
struct Checked {
    hash: Hash,
    seq: Option<u64>,
}

/// Maps `f` over the lines on all cores (the lines are independent).
fn par_map<T: Send>(lines: &[Line<'_>], f: impl Fn(&[u8]) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16);
    if threads == 1 || lines.len() < 10_000 {
        return lines.iter().map(|l| f(l.bytes)).collect();
    }
    let chunk = lines.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = lines
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(|l| f(l.bytes)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("verification worker panicked"))
            .collect()
    })
}

/// The fast pass over every line: hash and claimed seq.
fn check_all(lines: &[Line<'_>]) -> Vec<Checked> {
    par_map(lines, |b| Checked {
        hash: leaf_hash(b),
        seq: crate::record::peek_seq(b),
    })
}

/// The full pass: the first line (index into `lines`, counting from `from`) that is not a
/// canonical record, and why. Run on records no signature covers, and on failure paths to name
/// the first bad record exactly; records under a verified signed root need no parse to be
/// trusted, which keeps `verify` close to the speed of hashing.
fn first_malformed(lines: &[Line<'_>], from: usize, to: usize) -> Option<(usize, String)> {
    par_map(&lines[from..to], |b| Record::parse_line(b).err())
        .into_iter()
        .enumerate()
        .find_map(|(i, p)| p.map(|p| (from + i, p)))
}

fn record_error(
    segs: &[store::Segment],
    lines: &[Line<'_>],
    i: usize,
    msg: String,
) -> LogVerifyError {
    let l = &lines[i];
    LogVerifyError::Record {
        path: segs[l.seg].path.clone(),
        line: l.line,
        seq: i as u64,
        msg,
    }
}

/// Reads every segment and returns all leaf hashes (for proofs), checking only framing and seq.
pub(crate) fn leaf_hashes(dir: &Path) -> Result<(Vec<Hash>, Vec<Vec<u8>>), LogVerifyError> {
    let segs = store::segments(dir)?;
    let mut hashes = Vec::new();
    let mut lines_out = Vec::new();
    for seg in &segs {
        let bytes = fs::read(&seg.path).map_err(store::io_err(&seg.path, "read"))?;
        for (i, l) in bytes.split(|&b| b == b'\n').enumerate() {
            if l.is_empty() {
                continue;
            }
            let seq = hashes.len() as u64;
            if crate::record::peek_seq(l) != Some(seq) {
                return Err(LogVerifyError::Record {
                    path: seg.path.clone(),
                    line: i as u64 + 1,
                    seq,
                    msg: "not the record with this seq; run `audit verify`".into(),
                });
            }
            hashes.push(leaf_hash(l));
            lines_out.push(l.to_vec());
        }
    }
    Ok((hashes, lines_out))
}

fn load_key(
    dir: &Path,
    given: &Option<NoteVerifier>,
) -> Result<(NoteVerifier, bool), LogVerifyError> {
    match given {
        Some(k) => Ok((k.clone(), true)),
        None => Ok((store::read_vkey(dir)?, false)),
    }
}

fn open_checkpoint(
    path: &Path,
    text: &str,
    key: &NoteVerifier,
) -> Result<Checkpoint, LogVerifyError> {
    Checkpoint::open(text, key).map_err(|e| LogVerifyError::Checkpoint {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Verifies an audit directory. Read-only: it never quarantines or repairs.
pub fn verify(dir: &Path, opts: &VerifyOptions) -> Result<VerifyReport, LogVerifyError> {
    let segs = store::segments(dir)?;
    let mut contents = Vec::with_capacity(segs.len());
    for seg in &segs {
        contents.push(fs::read(&seg.path).map_err(store::io_err(&seg.path, "read"))?);
    }
    let mut warnings = Vec::new();
    let mut torn_tail_bytes = 0u64;
    let mut lines = Vec::new();
    for (si, (seg, bytes)) in segs.iter().zip(&contents).enumerate() {
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        if complete != bytes.len() {
            let line = bytes[..complete].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            if seg.first_seq.is_some() {
                return Err(LogVerifyError::Record {
                    path: seg.path.clone(),
                    line,
                    seq: lines.len() as u64 + line - 1,
                    msg: "sealed segment ends in a partial line".into(),
                });
            }
            torn_tail_bytes = (bytes.len() - complete) as u64;
            warnings.push(format!(
                "{}:{line}: torn last line ({torn_tail_bytes} bytes) from an interrupted write; not part of the log, the next writer will quarantine it",
                seg.path.display()
            ));
        }
        for (i, l) in bytes[..complete]
            .split_inclusive(|&b| b == b'\n')
            .enumerate()
        {
            lines.push(Line {
                seg: si,
                line: i as u64 + 1,
                bytes: &l[..l.len() - 1],
            });
        }
    }
    let checked = check_all(&lines);
    let hint = fs::read(dir.join(store::LEAVES)).unwrap_or_default();
    // A framing problem at line i: name a malformed record before it if there is one (it is
    // the first bad record), else this one.
    let fail_at = |i: usize, msg: String| -> LogVerifyError {
        match first_malformed(&lines, 0, i + 1) {
            Some((j, p)) => record_error(&segs, &lines, j, p),
            None => record_error(&segs, &lines, i, msg),
        }
    };
    let mut current_seg = usize::MAX;
    for (i, (l, c)) in lines.iter().zip(&checked).enumerate() {
        let seq = i as u64;
        let seg = &segs[l.seg];
        if l.seg != current_seg {
            current_seg = l.seg;
            if let Some(first) = seg.first_seq {
                if first != seq {
                    return Err(record_error(
                        &segs,
                        &lines,
                        i,
                        format!(
                            "segment is named for seq {first} but continues the log at seq {seq}"
                        ),
                    ));
                }
            }
        }
        if c.seq != Some(seq) {
            let found = c.seq.map_or("no seq".into(), |s| format!("seq {s}"));
            return Err(fail_at(i, format!(
                "found {found} where seq {seq} belongs: record {seq} was deleted, or records were reordered"
            )));
        }
        if let Some(h) = hint.get(i * 32..i * 32 + 32) {
            if h != [0u8; 32] && h != c.hash {
                return Err(fail_at(i,
                    "record was modified after it was written (its hash differs from the one recorded when it was appended)"
                        .into(),
                ));
            }
        }
    }
    // Segments with no lines still must not leave a hole.
    let mut per_seg = vec![0u64; segs.len()];
    for l in &lines {
        per_seg[l.seg] += 1;
    }
    let mut before = 0u64;
    for (si, seg) in segs.iter().enumerate() {
        if let Some(first) = seg.first_seq {
            if first != before {
                return Err(LogVerifyError::Record {
                    path: seg.path.clone(),
                    line: 1,
                    seq: before,
                    msg: format!("segment is named for seq {first} but the log before it ends at seq {before}"),
                });
            }
        }
        before += per_seg[si];
    }
    let hashes: Vec<Hash> = checked.iter().map(|c| c.hash).collect();
    drop(checked);
    let records = hashes.len() as u64;
    let (key, key_given) = load_key(dir, &opts.key)?;
    if !key_given {
        warnings.push(format!(
            "checked against the directory's own {} ({}); pass --key with the key you trust to rule out a replaced key",
            store::VKEY,
            key.to_vkey()
        ));
    }
    let cp_path = dir.join(store::CHECKPOINT);
    let checkpoint = match fs::read_to_string(&cp_path) {
        Ok(text) => Some(open_checkpoint(&cp_path, &text, &key)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(store::io_err(&cp_path, "read")(e).into()),
    };
    // One pass over the leaves gives both the full root and the root at the checkpoint's size.
    let capture = checkpoint
        .as_ref()
        .map(|c| c.size)
        .filter(|&n| n <= records);
    let (root, cp_root) = roots(&hashes, capture);
    let mut checkpoint_size = None;
    if let Some(cp) = &checkpoint {
        if cp.size > records {
            return Err(LogVerifyError::Truncated {
                path: cp_path,
                records,
                covered: cp.size,
            });
        }
        if cp_root != Some(cp.root) {
            if let Some((j, p)) = first_malformed(&lines, 0, cp.size as usize) {
                return Err(record_error(&segs, &lines, j, p));
            }
            return Err(LogVerifyError::RootMismatch {
                path: cp_path,
                size: cp.size,
            });
        }
        checkpoint_size = Some(cp.size);
    }
    // Records no signature covers yet must at least be well-formed, canonical records.
    let signed = checkpoint_size.unwrap_or(0) as usize;
    if let Some((j, p)) = first_malformed(&lines, signed, lines.len()) {
        return Err(record_error(&segs, &lines, j, p));
    } else if checkpoint_size.is_none() && records > 0 {
        warnings.push(format!(
            "no checkpoint yet: all {records} records are unsigned (a writer signs one every N records, T seconds and at close)"
        ));
    }
    let mut old_checkpoint_size = None;
    if let Some((path, text)) = &opts.old_checkpoint {
        let old = open_checkpoint(path, text, &key)?;
        if old.size > records {
            return Err(LogVerifyError::Truncated {
                path: path.clone(),
                records,
                covered: old.size,
            });
        }
        let proof = merkle::consistency_proof(old.size, &hashes).map_err(|e| {
            LogVerifyError::Checkpoint {
                path: path.clone(),
                msg: e.to_string(),
            }
        })?;
        if merkle::verify_consistency(old.size, records, &proof, &old.root, &root).is_err() {
            return Err(LogVerifyError::Inconsistent {
                path: path.clone(),
                old_size: old.size,
            });
        }
        old_checkpoint_size = Some(old.size);
    }
    let unsigned = records - checkpoint_size.unwrap_or(0);
    if unsigned > 0 && checkpoint_size.is_some() {
        warnings.push(format!(
            "{unsigned} records after the latest checkpoint are not signed yet"
        ));
    }
    let quarantined = store::quarantined(dir)?;
    for q in &quarantined {
        warnings.push(format!(
            "quarantined torn line: {} ({} bytes, would have been seq {})",
            q.path.display(),
            q.bytes,
            q.seq
        ));
    }
    Ok(VerifyReport {
        records,
        segments: segs.len(),
        root: B64.encode(root),
        checkpoint_size,
        unsigned,
        key: key.to_vkey(),
        key_given,
        old_checkpoint_size,
        torn_tail_bytes,
        quarantined,
        warnings,
    })
}

/// The root of all `leaves`, and the root of the first `at` of them.
fn roots(leaves: &[Hash], at: Option<u64>) -> (Hash, Option<Hash>) {
    let mut t = merkle::CompactTree::new();
    let mut captured = (at == Some(0)).then(|| t.root());
    for (i, h) in leaves.iter().enumerate() {
        t.push(*h);
        if at == Some(i as u64 + 1) {
            captured = Some(t.root());
        }
    }
    (t.root(), captured)
}

/// An RFC 6962 inclusion proof of one record against a signed checkpoint, in a form a reviewer
/// can check with any RFC 6962 implementation.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct InclusionProof {
    /// The record's seq (= leaf index).
    pub seq: u64,
    /// The record line exactly as logged.
    pub record: String,
    /// SHA-256(0x00 || record), hex.
    pub leaf_hash: String,
    /// Tree size of the checkpoint.
    pub tree_size: u64,
    /// Root of the checkpoint, base64 (as in the note).
    pub root: String,
    /// Audit path, hex, bottom-up.
    pub proof: Vec<String>,
    /// The signed checkpoint note.
    pub checkpoint: String,
}

fn unhex(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut h = [0u8; 32];
    for (i, b) in h.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(h)
}

/// Builds the inclusion proof for record `seq` against the latest checkpoint (verified with the
/// given key or the directory's `key.vkey`).
pub fn prove(
    dir: &Path,
    seq: u64,
    key: Option<NoteVerifier>,
) -> Result<InclusionProof, LogVerifyError> {
    let (key, _) = load_key(dir, &key)?;
    let cp_path = dir.join(store::CHECKPOINT);
    let note = fs::read_to_string(&cp_path).map_err(store::io_err(&cp_path, "read"))?;
    let cp = open_checkpoint(&cp_path, &note, &key)?;
    if seq >= cp.size {
        return Err(LogVerifyError::Checkpoint {
            path: cp_path,
            msg: format!(
                "record seq {seq} is not covered by the latest checkpoint (size {}); run `perry-sandbox audit checkpoint` first",
                cp.size
            ),
        });
    }
    let (hashes, lines) = leaf_hashes(dir)?;
    if (hashes.len() as u64) < cp.size {
        return Err(LogVerifyError::Truncated {
            path: cp_path,
            records: hashes.len() as u64,
            covered: cp.size,
        });
    }
    let leaves = &hashes[..cp.size as usize];
    let path = merkle::inclusion_proof(seq, leaves).map_err(|e| LogVerifyError::Checkpoint {
        path: cp_path.clone(),
        msg: e.to_string(),
    })?;
    let p = InclusionProof {
        seq,
        record: String::from_utf8_lossy(&lines[seq as usize]).into_owned(),
        leaf_hash: hex(&hashes[seq as usize]),
        tree_size: cp.size,
        root: B64.encode(cp.root),
        proof: path.iter().map(|h| hex(h)).collect(),
        checkpoint: note,
    };
    p.check(&key).map_err(|msg| LogVerifyError::Checkpoint {
        path: cp_path,
        msg: format!("the log does not match the checkpoint: {msg}"),
    })?;
    Ok(p)
}

impl InclusionProof {
    /// Checks the proof on its own: the note's signature with `key`, that it names this tree size
    /// and root, that the record hashes to the leaf, and that the path leads to the root.
    pub fn check(&self, key: &NoteVerifier) -> Result<(), String> {
        let cp = Checkpoint::open(&self.checkpoint, key).map_err(|e| e.to_string())?;
        if cp.size != self.tree_size || B64.encode(cp.root) != self.root {
            return Err("proof does not match its checkpoint".into());
        }
        let leaf = leaf_hash(self.record.as_bytes());
        if hex(&leaf) != self.leaf_hash {
            return Err("record does not hash to the leaf hash".into());
        }
        let path: Option<Vec<Hash>> = self.proof.iter().map(|h| unhex(h)).collect();
        let path = path.ok_or("proof hashes are not 64 hex digits")?;
        merkle::verify_inclusion(self.seq, self.tree_size, &leaf, &path, &cp.root)
            .map_err(|e| format!("inclusion proof fails: {e}"))
    }
}
