//! The writer: durable, group-committed appends, checkpoints, rotation and crash recovery.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::AuditError;
use crate::merkle::{leaf_hash, CompactTree, Hash};
use crate::note::{Checkpoint, Note, NoteSigner, NoteVerifier};
use crate::record::{peek_seq, Event};
use crate::state::{self, WriterState};
use crate::store::{self, io_err};

/// Where every security decision goes. `record` returns the record's seq only once the record is
/// durable (fdatasync'd), so an allow decision can be recorded before the act it allows.
///
/// Object safe: hold it as `Arc<dyn AuditSink>`.
pub trait AuditSink: Send + Sync {
    /// Appends one event durably and returns its seq.
    fn record(&self, event: Event) -> Result<u64, AuditError>;
}

impl<T: AuditSink + ?Sized> AuditSink for Arc<T> {
    fn record(&self, event: Event) -> Result<u64, AuditError> {
        (**self).record(event)
    }
}

impl<T: AuditSink + ?Sized> AuditSink for &T {
    fn record(&self, event: Event) -> Result<u64, AuditError> {
        (**self).record(event)
    }
}

/// Settings of a writer; [`LogOptions::from_config`] reads them from `[audit]`.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// The audit directory.
    pub dir: PathBuf,
    /// Checkpoint origin line and key name.
    pub origin: String,
    /// Checkpoint after this many unsigned records.
    pub checkpoint_every: u64,
    /// ... or once the oldest unsigned record is this old.
    pub checkpoint_interval: Duration,
    /// Seal the active segment once it reaches this many bytes.
    pub segment_size: u64,
}

impl LogOptions {
    /// Defaults for `dir`: origin `perry-sandbox.local/audit`, checkpoint every 1000 records or
    /// 60 s, 256 MiB segments.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogOptions {
            dir: dir.into(),
            origin: "perry-sandbox.local/audit".into(),
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            segment_size: 256 << 20,
        }
    }

    /// The settings from a loaded configuration.
    pub fn from_config(cfg: &perry_policies::Config) -> Self {
        LogOptions {
            dir: cfg.audit_dir(),
            origin: cfg.audit.origin.clone(),
            checkpoint_every: cfg.audit.checkpoint_every,
            checkpoint_interval: cfg.audit.checkpoint_interval.as_std(),
            segment_size: cfg.audit.segment_size.as_u64(),
        }
    }
}

/// The state only the current group-commit leader touches.
struct Writer {
    opts: LogOptions,
    lock: File,
    file: File,
    ino: u64,
    len: u64,
    seg_first: u64,
    tree: CompactTree,
    /// Leaf hash of the newest record in the active segment (`None` while it holds none).
    last_leaf: Option<Hash>,
    leaves: File,
    signer: NoteSigner,
    checkpointed: u64,
    unsigned_since: Option<Instant>,
}

#[derive(Default)]
struct Queue {
    /// Events waiting for the next batch, with the ticket of the caller waiting for each
    /// (`None` for [staged](AuditLog::stage) events, which nobody waits for).
    pending: Vec<(Option<u64>, Event)>,
    next_ticket: u64,
    done: HashMap<u64, Result<u64, AuditError>>,
    leader: bool,
    shutdown: bool,
    /// How long the last batch's write + fdatasync took.
    last_sync: Duration,
    /// Sizes of the last few batches: how many writers are usually waiting together.
    recent: [usize; 4],
    recent_at: usize,
}

/// Below this sync cost, gathering a fuller batch is not worth any delay.
const GATHER_MIN_SYNC: Duration = Duration::from_micros(200);
/// The most a leader waits for a fuller batch (also bounded by half the last sync time).
const GATHER_MAX: Duration = Duration::from_millis(2);

struct Shared {
    queue: Mutex<Queue>,
    cond: Condvar,
    /// Wakes a gathering leader when a record is queued.
    gather: Condvar,
    writer: Mutex<Writer>,
    tick: Condvar,
}

/// The audit log writer: an [`AuditSink`] backed by an audit directory. Share it as
/// `Arc<AuditLog>`; dropping the last handle writes a final checkpoint.
pub struct AuditLog {
    shared: Arc<Shared>,
    ticker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AuditLog {
    /// Opens (creating on first use) the log in `opts.dir`: takes the writer lock, loads or
    /// generates the signing key, resumes from the writer-state hint of the latest checkpoint
    /// when it checks out (reading only the records appended since), else replays the segments
    /// and checks the log still matches its latest checkpoint (refusing to append to a log that
    /// does not), and quarantines a torn last line.
    pub fn open(opts: LogOptions) -> Result<AuditLog, AuditError> {
        if opts.checkpoint_every == 0 {
            return Err(AuditError::Config(
                "checkpoint_every must be at least 1".into(),
            ));
        }
        store::ensure_dir(&opts.dir)?;
        let lockf = store::lock(&opts.dir)?;
        let res = Writer::open(opts, lockf);
        let w = res?;
        let interval = w.opts.checkpoint_interval;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            cond: Condvar::new(),
            gather: Condvar::new(),
            writer: Mutex::new(w),
            tick: Condvar::new(),
        });
        let s2 = Arc::clone(&shared);
        let ticker = std::thread::Builder::new()
            .name("audit-checkpoint".into())
            .spawn(move || ticker(s2, interval))
            .map_err(|e| AuditError::Io {
                path: PathBuf::from("<thread>"),
                op: "spawn checkpoint thread",
                msg: e.to_string(),
            })?;
        Ok(AuditLog {
            shared,
            ticker: Some(ticker),
        })
    }

    /// Signs and writes a checkpoint for everything appended so far (also from other processes),
    /// and returns the signed note.
    pub fn checkpoint(&self) -> Result<String, AuditError> {
        let mut w = lock(&self.shared.writer);
        w.locked(|w| w.write_checkpoint())
    }

    /// The public verifier key for this log's checkpoints.
    pub fn verifier(&self) -> NoteVerifier {
        lock(&self.shared.writer).signer.verifier().clone()
    }

    /// Number of records this writer knows of.
    pub fn size(&self) -> u64 {
        lock(&self.shared.writer).tree.size()
    }

    /// Queues `event` to be written with the next [`record`](AuditSink::record) call's batch
    /// (one `fdatasync` for both, in this order), or when the log is closed, whichever comes
    /// first. For context that must precede a decision but need not be durable on its own: a
    /// command's `config_load` record is staged, and the decision that follows makes both
    /// durable before anything acts on it. A crash in between loses only the staged record, and
    /// with it no decision.
    pub fn stage(&self, event: Event) {
        let mut q = lock(&self.shared.queue);
        q.pending.push((None, event));
    }

    /// Makes [staged](AuditLog::stage) events durable now (one `fdatasync`), for a command
    /// that stages context but may decide nothing (`config check`) and wants to know the write
    /// worked. A no-op when nothing is staged.
    pub fn flush(&self) -> Result<(), AuditError> {
        let staged: Vec<Event> = {
            let mut q = lock(&self.shared.queue);
            let (staged, waited): (Vec<_>, Vec<_>) = std::mem::take(&mut q.pending)
                .into_iter()
                .partition(|(t, _)| t.is_none());
            q.pending = waited;
            staged.into_iter().map(|(_, e)| e).collect()
        };
        if staged.is_empty() {
            return Ok(());
        }
        let mut w = lock(&self.shared.writer);
        w.locked(|w| w.append(staged)).map(|_| ())
    }

    /// Stops the checkpoint timer and writes a final checkpoint if records are unsigned.
    pub fn close(mut self) -> Result<(), AuditError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), AuditError> {
        {
            let mut q = lock(&self.shared.queue);
            if q.shutdown {
                return Ok(());
            }
            q.shutdown = true;
        }
        self.shared.tick.notify_all();
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        // Staged events no decision has carried to disk yet.
        self.flush()?;
        let mut w = lock(&self.shared.writer);
        w.locked(|w| {
            if w.tree.size() > w.checkpointed {
                w.write_checkpoint().map(|_| ())
            } else {
                Ok(())
            }
        })
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn ticker(shared: Arc<Shared>, interval: Duration) {
    let step = interval
        .min(Duration::from_secs(1))
        .max(Duration::from_millis(10));
    let mut q = lock(&shared.queue);
    loop {
        if q.shutdown {
            return;
        }
        q = shared
            .tick
            .wait_timeout(q, step)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
        if q.shutdown {
            return;
        }
        drop(q);
        {
            let mut w = lock(&shared.writer);
            let due = w
                .unsigned_since
                .is_some_and(|t| t.elapsed() >= w.opts.checkpoint_interval);
            if due {
                let _ = w.locked(|w| {
                    if w.tree.size() > w.checkpointed {
                        w.write_checkpoint().map(|_| ())
                    } else {
                        w.unsigned_since = None;
                        Ok(())
                    }
                });
            }
        }
        q = lock(&shared.queue);
    }
}

impl AuditSink for AuditLog {
    /// Group commit: the first waiting caller becomes the leader and writes every queued record
    /// with one `write` + `fdatasync`; the others wait for its result. Writers released by one
    /// sync re-enter a moment later, just after the next leader took its batch, so batches would
    /// alternate between small and large; when syncs are slow the leader therefore waits briefly
    /// (at most half the last sync time, and 2 ms) until as many records are queued as in recent
    /// batches. A lone writer never waits.
    fn record(&self, event: Event) -> Result<u64, AuditError> {
        let sh = &*self.shared;
        let mut q = lock(&sh.queue);
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.pending.push((Some(ticket), event));
        if q.leader {
            sh.gather.notify_one();
        }
        loop {
            if let Some(r) = q.done.remove(&ticket) {
                return r;
            }
            if !q.leader {
                q.leader = true;
                q = gather(sh, q);
                let batch = std::mem::take(&mut q.pending);
                drop(q);
                let (tickets, events): (Vec<Option<u64>>, Vec<Event>) = batch.into_iter().unzip();
                let n = tickets.len();
                let started = Instant::now();
                let res = {
                    let mut w = lock(&sh.writer);
                    w.locked(|w| w.append(events))
                };
                let took = started.elapsed();
                q = lock(&sh.queue);
                q.last_sync = took;
                let at = q.recent_at;
                q.recent[at % 4] = n;
                q.recent_at = at.wrapping_add(1);
                match res {
                    Ok(seqs) => {
                        for (t, s) in tickets.into_iter().zip(seqs) {
                            if let Some(t) = t {
                                q.done.insert(t, Ok(s));
                            }
                        }
                    }
                    Err(e) => {
                        for t in tickets.into_iter().flatten() {
                            q.done.insert(t, Err(e.clone()));
                        }
                    }
                }
                q.leader = false;
                sh.cond.notify_all();
                continue;
            }
            q = sh.cond.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The leader's short wait for a fuller batch (see [`AuditLog::record`]).
fn gather<'a>(sh: &'a Shared, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
    if q.last_sync < GATHER_MIN_SYNC {
        return q;
    }
    let want = q.recent.iter().copied().max().unwrap_or(1);
    let deadline = Instant::now() + (q.last_sync / 2).min(GATHER_MAX);
    while q.pending.len() < want && !q.shutdown {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        q = sh
            .gather
            .wait_timeout(q, deadline - now)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
    }
    q
}

/// Reads every complete line of `bytes` (one segment) into the tree, checking seq continuity,
/// and captures the root when the tree reaches `capture_at`. Returns the length of the complete
/// part (anything after it is a torn line).
fn ingest(
    path: &Path,
    bytes: &[u8],
    line_base: u64,
    tree: &mut CompactTree,
    capture_at: Option<u64>,
    captured: &mut Option<Hash>,
    mut on_leaf: impl FnMut(u64, &Hash),
) -> Result<usize, AuditError> {
    let mut pos = 0;
    let mut line_no = line_base;
    while let Some(nl) = memchr_nl(&bytes[pos..]) {
        let line = &bytes[pos..pos + nl];
        line_no += 1;
        let expect = tree.size();
        match peek_seq(line) {
            Some(s) if s == expect => {}
            found => {
                return Err(AuditError::Corrupt {
                    path: path.to_path_buf(),
                    line: line_no,
                    seq: expect,
                    msg: match found {
                        Some(s) => format!("found seq {s} where seq {expect} belongs"),
                        None => "not a record line".into(),
                    },
                })
            }
        }
        let h = leaf_hash(line);
        on_leaf(expect, &h);
        tree.push(h);
        if capture_at == Some(tree.size()) {
            *captured = Some(tree.root());
        }
        pos += nl + 1;
    }
    Ok(pos)
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

impl Writer {
    fn open(opts: LogOptions, lockf: File) -> Result<Writer, AuditError> {
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
    fn resume(&mut self, st: WriterState) -> Result<(), AuditError> {
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
    fn save_state(&self) {
        if let Some(p) = self.prepare_state() {
            p.commit();
        }
    }

    /// Writes the hint of where the writer stands to its temp file (see [`state::prepare`]).
    fn prepare_state(&self) -> Option<state::Pending> {
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
    fn locked<T>(
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
    fn read_checkpoint(&self) -> Result<Option<(u64, Hash)>, AuditError> {
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
    fn rescan(&mut self) -> Result<(), AuditError> {
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
    fn catch_up(&mut self) -> Result<(), AuditError> {
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

    fn append(&mut self, events: Vec<Event>) -> Result<Vec<u64>, AuditError> {
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

    fn write_checkpoint(&mut self) -> Result<String, AuditError> {
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

    fn rotate(&mut self) -> Result<(), AuditError> {
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

fn open_active(path: &Path) -> Result<File, AuditError> {
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

#[cfg(test)]
mod tests;
