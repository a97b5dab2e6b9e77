//! The group-commit leader's state and steps: append a batch with one `fdatasync`, keep the
//! compact Merkle tree, sign checkpoints, rotate segments, quarantine a torn tail on open.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use super::{ingest, LogOptions};
use crate::error::AuditError;
use crate::merkle::{leaf_hash, CompactTree, Hash};
use crate::note::{Checkpoint, Note, NoteSigner};
use crate::record::Event;
use crate::state::{self, WriterState};
use crate::store::{self, io_err};

/// The state only the current group-commit leader touches.
pub(super) struct Writer {
    pub(super) opts: LogOptions,
    pub(super) lock: File,
    pub(super) file: File,
    pub(super) ino: u64,
    pub(super) len: u64,
    pub(super) seg_first: u64,
    pub(super) tree: CompactTree,
    /// Leaf hash of the newest record in the active segment (`None` while it holds none).
    pub(super) last_leaf: Option<Hash>,
    pub(super) leaves: File,
    pub(super) signer: NoteSigner,
    pub(super) checkpointed: u64,
    pub(super) unsigned_since: Option<Instant>,
}

impl Writer {
    pub(super) fn open(opts: LogOptions, lockf: File) -> Result<Writer, AuditError> {
        let dir = opts.dir.clone();
        let signer = store::load_or_create_key(&dir, &opts.origin)?;
        let leaves_path = dir.join(store::LEAVES);
        let leaves = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&leaves_path)
            .map_err(io_err(&leaves_path, "open"))?;
        let active = dir.join(store::ACTIVE);
        let file = open_active(&active)?;
        let mut w = Writer {
            opts,
            lock: lockf,
            file,
            ino: 0,
            len: 0,
            seg_first: 0,
            tree: CompactTree::new(),
            last_leaf: None,
            leaves,
            signer,
            checkpointed: 0,
            unsigned_since: None,
        };
        match state::resume(&dir, &w.file, &w.leaves, w.signer.verifier()) {
            Ok(st) => w.resume(st)?,
            Err(_) => w.rescan()?,
        }
        store::unlock(&w.lock);
        Ok(w)
    }

    /// Takes up the checked writer state of the latest checkpoint and reads only the records
    /// appended after it, quarantining a torn last line as a replay would. Should those records
    /// be damaged, replays the whole log instead, so the error is the one a replay reports.
    pub(super) fn resume(&mut self, st: WriterState) -> Result<(), AuditError> {
        self.checkpointed = st.tree.size();
        self.tree = st.tree;
        self.last_leaf = st.last;
        self.seg_first = st.seg_first;
        self.ino = st.ino;
        self.len = st.len;
        self.unsigned_since = None;
        if self.catch_up().is_err() {
            self.unsigned_since = None;
            return self.rescan();
        }
        Ok(())
    }

    /// Saves where the writer stands as the hint the next open resumes from. Call only when the
    /// tree is exactly what the checkpoint on disk covers.
    pub(super) fn save_state(&self) {
        if let Some(p) = self.prepare_state() {
            p.commit();
        }
    }

    /// Writes the hint of where the writer stands to its temp file (see [`state::prepare`]).
    pub(super) fn prepare_state(&self) -> Option<state::Pending> {
        let st = WriterState {
            tree: self.tree.clone(),
            seg_first: self.seg_first,
            ino: self.ino,
            len: self.len,
            last: self.last_leaf,
        };
        if (st.tree.size() > st.seg_first) != st.last.is_some() {
            state::discard(&self.opts.dir);
            return None;
        }
        state::prepare(&self.opts.dir, &st)
    }

    /// Runs `f` holding the cross-process writer lock, after catching up with other writers.
    pub(super) fn locked<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        rustix::fs::flock(&self.lock, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            AuditError::Io {
                path: self.opts.dir.join(store::LOCK),
                op: "lock",
                msg: e.to_string(),
            }
        })?;
        let r = self.catch_up().and_then(|_| f(self));
        store::unlock(&self.lock);
        r
    }

    /// Reads the latest checkpoint (if any) as (size, root).
    pub(super) fn read_checkpoint(&self) -> Result<Option<(u64, Hash)>, AuditError> {
        let path = self.opts.dir.join(store::CHECKPOINT);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, "read")(e)),
        };
        let cp = Note::parse(&text)
            .and_then(|n| Checkpoint::parse_text(&n.text))
            .map_err(|e| AuditError::Checkpoint {
                path: path.clone(),
                msg: e.to_string(),
            })?;
        Ok(Some((cp.size, cp.root)))
    }

    /// Replays all segments from scratch (on open without a usable writer-state hint, and when
    /// another process rotated). Ending exactly at the checkpoint, it saves the hint, so the
    /// next open need not replay again.
    pub(super) fn rescan(&mut self) -> Result<(), AuditError> {
        let dir = self.opts.dir.clone();
        let cp = self.read_checkpoint()?;
        let cpsize = cp.map(|c| c.0);
        let mut tree = CompactTree::new();
        let mut captured = if cpsize == Some(0) {
            Some(tree.root())
        } else {
            None
        };
        let segs = store::segments(&dir)?;
        let mut seg_first = 0;
        let leaves_len = self.leaves.metadata().map(|m| m.len()).unwrap_or(0);
        let mut hint: Vec<(u64, Hash)> = Vec::new();
        let mut last = None;
        for seg in &segs {
            match seg.first_seq {
                Some(first) if first != tree.size() => {
                    return Err(AuditError::Corrupt {
                        path: seg.path.clone(),
                        line: 1,
                        seq: tree.size(),
                        msg: format!(
                            "segment starts at seq {first} but the log before it ends at seq {}",
                            tree.size()
                        ),
                    });
                }
                Some(_) => {}
                None => seg_first = tree.size(),
            }
            let bytes = fs::read(&seg.path).map_err(io_err(&seg.path, "read"))?;
            let complete = ingest(
                &seg.path,
                &bytes,
                0,
                &mut tree,
                cpsize,
                &mut captured,
                |s, h| {
                    if (s + 1) * 32 > leaves_len {
                        hint.push((s, *h));
                    }
                    last = Some(*h);
                },
            )?;
            if complete != bytes.len() {
                if seg.first_seq.is_some() {
                    return Err(AuditError::Corrupt {
                        path: seg.path.clone(),
                        line: bytes[..complete].iter().filter(|&&b| b == b'\n').count() as u64 + 1,
                        seq: tree.size(),
                        msg: "sealed segment ends in a partial line".into(),
                    });
                }
                // A crash mid-append: keep the torn bytes for review, never merge or drop them.
                store::quarantine(&dir, tree.size(), &bytes[complete..])?;
                OpenOptions::new()
                    .write(true)
                    .open(&seg.path)
                    .and_then(|f| {
                        f.set_len(complete as u64)?;
                        f.sync_all()
                    })
                    .map_err(io_err(&seg.path, "truncate torn line"))?;
            }
        }
        if let Some((size, root)) = cp {
            let cppath = dir.join(store::CHECKPOINT);
            if size > tree.size() {
                return Err(AuditError::Checkpoint {
                    path: cppath,
                    msg: format!(
                        "the log has {} records but its checkpoint covers {size}: records from seq {} on are missing",
                        tree.size(),
                        tree.size()
                    ),
                });
            }
            if captured != Some(root) {
                return Err(AuditError::Checkpoint {
                    path: cppath,
                    msg: format!(
                        "the first {size} records do not match the signed checkpoint root"
                    ),
                });
            }
        }
        for (seq, h) in hint {
            let _ = self.leaves.write_all_at(&h, seq * 32);
        }
        let active = dir.join(store::ACTIVE);
        self.file = open_active(&active)?;
        let meta = self.file.metadata().map_err(io_err(&active, "stat"))?;
        self.ino = meta.ino();
        self.len = meta.len();
        self.seg_first = seg_first;
        self.last_leaf = last.filter(|_| tree.size() > seg_first);
        self.tree = tree;
        self.checkpointed = cpsize.unwrap_or(0);
        if self.tree.size() > self.checkpointed && self.unsigned_since.is_none() {
            self.unsigned_since = Some(Instant::now());
        }
        if cpsize == Some(self.tree.size()) {
            self.save_state();
        }
        Ok(())
    }

    /// Picks up records appended by other processes since we last held the lock.
    pub(super) fn catch_up(&mut self) -> Result<(), AuditError> {
        let active = self.opts.dir.join(store::ACTIVE);
        let meta = match fs::metadata(&active) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.rescan(),
            Err(e) => return Err(io_err(&active, "stat")(e)),
        };
        if meta.ino() != self.ino {
            return self.rescan();
        }
        if meta.len() == self.len {
            return Ok(());
        }
        if meta.len() < self.len {
            return Err(AuditError::Corrupt {
                path: active,
                line: 0,
                seq: self.tree.size(),
                msg: format!(
                    "the active segment shrank from {} to {} bytes",
                    self.len,
                    meta.len()
                ),
            });
        }
        let mut buf = Vec::with_capacity((meta.len() - self.len) as usize);
        self.file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.read_to_end(&mut buf))
            .map_err(io_err(&active, "read"))?;
        let leaves = &self.leaves;
        let mut none = None;
        let mut last = None;
        let base = self.tree.size() - self.seg_first;
        let complete = ingest(
            &active,
            &buf,
            base,
            &mut self.tree,
            None,
            &mut none,
            |s, h| {
                let _ = leaves.write_all_at(h, s * 32);
                last = Some(*h);
            },
        )?;
        self.last_leaf = last.or(self.last_leaf);
        self.len += complete as u64;
        if complete != buf.len() {
            store::quarantine(&self.opts.dir, self.tree.size(), &buf[complete..])?;
            self.file
                .set_len(self.len)
                .and_then(|_| self.file.sync_all())
                .map_err(io_err(&active, "truncate torn line"))?;
        }
        if self.tree.size() > self.checkpointed && self.unsigned_since.is_none() {
            self.unsigned_since = Some(Instant::now());
        }
        Ok(())
    }

    pub(super) fn append(&mut self, events: Vec<Event>) -> Result<Vec<u64>, AuditError> {
        let active = self.opts.dir.join(store::ACTIVE);
        let first = self.tree.size();
        let mut buf = Vec::with_capacity(events.len() * 400);
        let mut hashes = Vec::with_capacity(events.len());
        for (i, ev) in events.into_iter().enumerate() {
            let line = ev.into_record(first + i as u64).to_line();
            hashes.push(leaf_hash(&line));
            buf.extend_from_slice(&line);
            buf.push(b'\n');
        }
        let written = self
            .file
            .write_all(&buf)
            .and_then(|_| self.file.sync_data());
        if let Err(e) = written {
            // Leave no partial batch behind: nothing in it was acknowledged.
            let _ = self.file.set_len(self.len);
            let _ = self.file.sync_data();
            return Err(io_err(&active, "append")(e));
        }
        self.len += buf.len() as u64;
        let mut hint = Vec::with_capacity(hashes.len() * 32);
        for h in &hashes {
            hint.extend_from_slice(h);
            self.tree.push(*h);
        }
        self.last_leaf = hashes.last().copied().or(self.last_leaf);
        let _ = self.leaves.write_all_at(&hint, first * 32);
        if self.unsigned_since.is_none() {
            self.unsigned_since = Some(Instant::now());
        }
        if self.tree.size() - self.checkpointed >= self.opts.checkpoint_every
            || self
                .unsigned_since
                .is_some_and(|t| t.elapsed() >= self.opts.checkpoint_interval)
        {
            self.write_checkpoint()?;
        }
        if self.len >= self.opts.segment_size {
            self.rotate()?;
        }
        Ok((first..first + hashes.len() as u64).collect())
    }

    pub(super) fn write_checkpoint(&mut self) -> Result<String, AuditError> {
        let cp = Checkpoint {
            origin: self.opts.origin.clone(),
            size: self.tree.size(),
            root: self.tree.root(),
            extensions: Vec::new(),
        };
        let note = self.signer.sign(&cp.to_text());
        // The writer-state hint for this checkpoint is renamed into place right after it, and
        // the checkpoint's directory fsync covers both.
        let hint = self.prepare_state();
        store::write_atomic_then(
            &self.opts.dir.join(store::CHECKPOINT),
            note.as_bytes(),
            0o644,
            || {
                if let Some(h) = hint {
                    h.commit();
                }
            },
        )?;
        self.checkpointed = cp.size;
        self.unsigned_since = None;
        Ok(note)
    }

    pub(super) fn rotate(&mut self) -> Result<(), AuditError> {
        let dir = self.opts.dir.clone();
        let active = dir.join(store::ACTIVE);
        let sealed = dir.join(store::sealed_name(self.seg_first));
        fs::rename(&active, &sealed).map_err(io_err(&sealed, "seal segment"))?;
        store::sync_dir(&dir)?;
        self.file = open_active(&active)?;
        let meta = self.file.metadata().map_err(io_err(&active, "stat"))?;
        self.ino = meta.ino();
        self.len = meta.len();
        self.seg_first = self.tree.size();
        self.last_leaf = None;
        // A hint written at the checkpoint just before names the old active segment: renew it,
        // made durable by the directory fsync below.
        if self.checkpointed == self.tree.size() {
            self.save_state();
        }
        store::sync_dir(&dir)?;
        Ok(())
    }
}

pub(super) fn open_active(path: &Path) -> Result<File, AuditError> {
    let existed = path.exists();
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(io_err(path, "open"))?;
    if !existed {
        f.flush().map_err(io_err(path, "flush"))?;
        if let Some(d) = path.parent() {
            store::sync_dir(d)?;
        }
    }
    Ok(f)
}
