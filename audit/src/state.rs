//! `writer.state`: where the writer stood at its latest checkpoint, so that opening the log costs
//! O(records since that checkpoint) instead of O(every record ever written).
//!
//! Without it, every open (every `perry-sandbox run`) replays all segments: reads every record
//! line, hashes it and rebuilds the tree, only to check the prefix against the signed checkpoint.
//! At ~450 bytes a record, a log of 1M records is 450 MB read and hashed per run.
//!
//! The file is a hint and is never trusted. [`resume`] uses it only when
//! * the latest checkpoint bears a good signature by the writer's key, and the hint's tree has
//!   its size and its perfect-subtree roots hash to its root: the signature authenticates the
//!   tree the writer resumes from;
//! * the active segment is the same file (inode) it describes, at least `len` bytes long, the
//!   line ending at byte `len` is the record it names (leaf hash and seq `size - 1`) and the
//!   segment's first record is seq `seg_first`;
//! * the sealed segments' names fit `seg_first` (names only: their records are not read);
//! * `leaves.bin` holds a leaf hash for every covered record (a replay would rebuild it).
//!
//! Otherwise the writer replays the log exactly as it did before this file existed, with the same
//! checks and errors. So a missing, torn, stale or forged hint only ever costs one full replay,
//! never an error or a wrong tree, which is why it is written without fsync.
//!
//! What resuming gives up is re-reading the covered records on every open: a record changed in
//! place under the checkpoint no longer stops the writer from opening (a replay would refuse to
//! append). It is still caught by `audit verify`, and the writer keeps extending the signed tree,
//! not the changed records, so later checkpoints do not cover the change either.
//!
//! Format: seven lines of ASCII text, nothing else (no spaces but the single separators, decimal
//! numbers without leading zeros, lowercase hex):
//!
//! ```text
//! perry-audit writer.state 1
//! size <records covered: the checkpoint's size>
//! stack[ <hex perfect-subtree root>]...   one per set bit of size, largest subtree first
//! seg_first <seq of the active segment's first record>
//! ino <inode of the active segment>
//! len <bytes of the active segment covered>
//! last <hex leaf hash of the record ending at byte len, or - when the segment holds none>
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::hex;
use crate::merkle::{leaf_hash, CompactTree, Hash};
use crate::note::{Checkpoint, NoteVerifier};
use crate::record::peek_seq;
use crate::store;

/// First line: names the format and its version.
const MAGIC: &str = "perry-audit writer.state 1";
/// More than any valid state (64 roots of 65 bytes and six short lines) or checkpoint note holds;
/// a larger file is not read.
const MAX_BYTES: u64 = 8 << 10;
/// Temp name the state is written to before the rename (writers hold the lock, so one suffices).
const TMP: &str = ".writer.state.tmp";
/// Bytes read at the start of the active segment: enough for `{"seq":<20 digits>,`.
const SEQ_PREFIX: u64 = 32;

/// What the writer needs to resume appending without replaying the log.
#[derive(Clone, Debug)]
pub(crate) struct WriterState {
    /// The tree of every record the checkpoint covers.
    pub tree: CompactTree,
    /// Seq of the active segment's first record.
    pub seg_first: u64,
    /// Inode of the active segment.
    pub ino: u64,
    /// Bytes of the active segment that hold the covered records.
    pub len: u64,
    /// Leaf hash of the last covered record, if the active segment holds one.
    pub last: Option<Hash>,
}

/// Why the hint was not used (the writer then replays the log). Kept apart so tests can tell
/// which check refused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stale {
    /// No hint file (or it could not be read).
    Missing,
    /// The hint is not in the format above.
    Malformed,
    /// No readable checkpoint to authenticate the hint with.
    NoCheckpoint,
    /// The checkpoint is not a note signed by the writer's key.
    Signature,
    /// The hint's size is not the checkpoint's.
    Size,
    /// The hint's tree does not hash to the checkpoint's root.
    Root,
    /// The active segment is another file than the hint describes.
    Replaced,
    /// The active segment is shorter than the hint covers.
    Short,
    /// The line ending where the hint's bytes end is not the record the hint names.
    LastRecord,
    /// The active segment does not start with record `seg_first`.
    FirstRecord,
    /// The sealed segments' names do not fit `seg_first`.
    Sealed,
    /// `leaves.bin` lacks leaf hashes of covered records (a replay rewrites them).
    Leaves,
    /// Reading the active segment or listing the directory failed.
    Io,
}

impl WriterState {
    /// The file's text (see the module documentation).
    pub(crate) fn to_text(&self) -> String {
        let mut s = format!("{MAGIC}\nsize {}\nstack", self.tree.size());
        for h in self.tree.stack() {
            s.push(' ');
            s.push_str(&hex(h));
        }
        let last = self
            .last
            .as_ref()
            .map_or_else(|| "-".to_string(), |h| hex(h));
        s.push_str(&format!(
            "\nseg_first {}\nino {}\nlen {}\nlast {last}\n",
            self.seg_first, self.ino, self.len
        ));
        s
    }

    /// Parses the file's text strictly; `None` for anything else, never a panic.
    pub(crate) fn parse(bytes: &[u8]) -> Option<WriterState> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.strip_suffix('\n')?.split('\n');
        if lines.next()? != MAGIC {
            return None;
        }
        let size = num(field(lines.next()?, "size")?)?;
        let stack = roots(lines.next()?.strip_prefix("stack")?)?;
        let seg_first = num(field(lines.next()?, "seg_first")?)?;
        let ino = num(field(lines.next()?, "ino")?)?;
        let len = num(field(lines.next()?, "len")?)?;
        let last = match field(lines.next()?, "last")? {
            "-" => None,
            h => Some(unhex(h)?),
        };
        if lines.next().is_some() || seg_first > size {
            return None;
        }
        // No records in the active segment exactly when no bytes and no last record are covered.
        let empty = size == seg_first;
        if (len == 0) != empty || last.is_none() != empty {
            return None;
        }
        Some(WriterState {
            tree: CompactTree::from_parts(size, stack)?,
            seg_first,
            ino,
            len,
            last,
        })
    }
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.strip_prefix(key)?.strip_prefix(' ')
}

/// A decimal u64 in canonical form (no sign, no leading zeros).
fn num(s: &str) -> Option<u64> {
    let canonical = !s.is_empty()
        && s.len() <= 20
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// ` <hex>` repeated (the rest of the `stack` line).
fn roots(mut rest: &str) -> Option<Vec<Hash>> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        rest = rest.strip_prefix(' ')?;
        out.push(unhex(rest.get(..64)?)?);
        rest = rest.get(64..)?;
    }
    Some(out)
}

fn unhex(s: &str) -> Option<Hash> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

/// A hint written to its temp file, to be renamed into place by [`Pending::commit`].
#[must_use = "the hint takes effect only once committed"]
pub(crate) struct Pending {
    dir: PathBuf,
}

/// Writes the hint to a temp file; [`Pending::commit`] renames it over the old one, so a reader
/// sees the old or the new file whole. Apart so the rename can come right after the checkpoint's
/// and share its directory fsync. Neither step fsyncs the file: a hint lost or torn by a crash
/// is refused by [`resume`] and costs one replay. On failure the old hint is removed rather than
/// left describing an older state (it would be refused anyway; this keeps the directory honest).
pub(crate) fn prepare(dir: &Path, st: &WriterState) -> Option<Pending> {
    let tmp = dir.join(TMP);
    let written = (|| {
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(st.to_text().as_bytes())
    })();
    match written {
        Ok(()) => Some(Pending {
            dir: dir.to_path_buf(),
        }),
        Err(_) => {
            let _ = fs::remove_file(&tmp);
            discard(dir);
            None
        }
    }
}

impl Pending {
    /// Renames the prepared hint into place (see [`prepare`]).
    pub(crate) fn commit(self) {
        let tmp = self.dir.join(TMP);
        if fs::rename(&tmp, self.dir.join(store::STATE)).is_err() {
            let _ = fs::remove_file(&tmp);
            discard(&self.dir);
        }
    }
}

/// Removes the hint (the next open replays the log).
pub(crate) fn discard(dir: &Path) {
    let _ = fs::remove_file(dir.join(store::STATE));
}

/// Reads and checks the hint of `dir` against its checkpoint (which must carry a good signature
/// by `key`, the writer's own), its open active segment `active` and its `leaves` file (see the
/// module documentation). `Ok` only if every check passes.
pub(crate) fn resume(
    dir: &Path,
    active: &File,
    leaves: &File,
    key: &NoteVerifier,
) -> Result<WriterState, Stale> {
    let st =
        WriterState::parse(&read(dir, store::STATE, Stale::Missing)?).ok_or(Stale::Malformed)?;
    let note = read(dir, store::CHECKPOINT, Stale::NoCheckpoint)?;
    let note = std::str::from_utf8(&note).map_err(|_| Stale::Signature)?;
    let cp = Checkpoint::open(note, key).map_err(|_| Stale::Signature)?;
    if st.tree.size() != cp.size {
        return Err(Stale::Size);
    }
    if st.tree.root() != cp.root {
        return Err(Stale::Root);
    }
    check_active(&st, active)?;
    check_sealed(dir, st.seg_first)?;
    let needed = cp.size.checked_mul(32).ok_or(Stale::Leaves)?;
    match leaves.metadata() {
        Ok(m) if m.len() >= needed => Ok(st),
        Ok(_) => Err(Stale::Leaves),
        Err(_) => Err(Stale::Io),
    }
}

/// Reads a small file of `dir` (the hint or the checkpoint); `missing` if it cannot be read,
/// [`Stale::Malformed`] if it is larger than either can be.
fn read(dir: &Path, name: &str, missing: Stale) -> Result<Vec<u8>, Stale> {
    let mut buf = Vec::new();
    File::open(dir.join(name))
        .and_then(|f| f.take(MAX_BYTES + 1).read_to_end(&mut buf))
        .map_err(|_| missing)?;
    if buf.len() as u64 > MAX_BYTES {
        return Err(Stale::Malformed);
    }
    Ok(buf)
}

/// The active segment is the file the hint describes and holds its records where it says.
fn check_active(st: &WriterState, active: &File) -> Result<(), Stale> {
    let meta = active.metadata().map_err(|_| Stale::Io)?;
    if meta.ino() != st.ino {
        return Err(Stale::Replaced);
    }
    if meta.len() < st.len {
        return Err(Stale::Short);
    }
    let Some(last) = st.last else {
        return Ok(()); // len is 0: nothing of this segment is covered.
    };
    let line = line_before(active, st.len)
        .map_err(|_| Stale::Io)?
        .ok_or(Stale::LastRecord)?;
    if leaf_hash(&line) != last || peek_seq(&line) != Some(st.tree.size() - 1) {
        return Err(Stale::LastRecord);
    }
    let mut head = vec![0u8; SEQ_PREFIX.min(st.len) as usize];
    active.read_exact_at(&mut head, 0).map_err(|_| Stale::Io)?;
    if peek_seq(&head) != Some(st.seg_first) {
        return Err(Stale::FirstRecord);
    }
    Ok(())
}

/// The line (without its newline) that ends with the newline at byte `end - 1` of `f`, or `None`
/// if that byte is not a newline. Reads backwards in growing chunks, so it costs about one line.
fn line_before(f: &File, end: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut chunk = 4096u64;
    loop {
        let start = end.saturating_sub(chunk);
        let mut buf = vec![0u8; (end - start) as usize];
        f.read_exact_at(&mut buf, start)?;
        let Some((&b'\n', body)) = buf.split_last() else {
            return Ok(None);
        };
        if let Some(nl) = body.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(body[nl + 1..].to_vec()));
        }
        if start == 0 {
            return Ok(Some(body.to_vec()));
        }
        chunk = chunk.saturating_mul(2);
    }
}

/// The sealed segments' names fit `seg_first`: none before the first rotation, else starting at
/// seq 0 and all before `seg_first`. Only names are listed; no segment is read.
fn check_sealed(dir: &Path, seg_first: u64) -> Result<(), Stale> {
    let segs = store::segments(dir).map_err(|_| Stale::Io)?;
    let sealed: Vec<u64> = segs.iter().filter_map(|s| s.first_seq).collect();
    let fits = match (sealed.first(), sealed.last()) {
        (Some(&first), Some(&last)) => first == 0 && last < seg_first,
        _ => seg_first == 0,
    };
    if fits {
        Ok(())
    } else {
        Err(Stale::Sealed)
    }
}

#[cfg(test)]
mod tests;
