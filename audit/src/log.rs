//! The writer: durable, group-committed appends, checkpoints, rotation and crash recovery.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::AuditError;
use crate::merkle::{leaf_hash, CompactTree, Hash};
use crate::note::NoteVerifier;
use crate::record::{peek_seq, Event};
use crate::store;

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

mod writer;

use writer::Writer;

#[cfg(test)]
mod tests;
