//! Review queries: read records in order across segments, filter them, and export them.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::AuditError;
use crate::record::{Decision, Record};
use crate::store::{self, io_err};

/// Which records a reviewer wants. Empty fields match everything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Records at or after this time (microseconds since the epoch).
    pub since: Option<i64>,
    /// Records before this time.
    pub until: Option<i64>,
    /// Exact action, e.g. `verify`.
    pub action: Option<String>,
    /// Exact decision.
    pub decision: Option<Decision>,
    /// Substring of the image reference, or the exact digest.
    pub image: Option<String>,
    /// Exact capability name.
    pub capability: Option<String>,
    /// Actor uid.
    pub uid: Option<u32>,
    /// Exact correlation id.
    pub correlation: Option<String>,
}

impl Filter {
    /// Whether `r` passes every set condition.
    pub fn matches(&self, r: &Record) -> bool {
        let t = r.time_micros().unwrap_or(i64::MIN);
        self.since.is_none_or(|s| t >= s)
            && self.until.is_none_or(|u| t < u)
            && self.action.as_ref().is_none_or(|a| &r.action == a)
            && self.decision.is_none_or(|d| r.decision == d)
            && self.image.as_ref().is_none_or(|i| {
                r.subject
                    .image
                    .as_ref()
                    .is_some_and(|x| x.contains(i.as_str()))
                    || r.subject.digest.as_ref() == Some(i)
            })
            && self
                .capability
                .as_ref()
                .is_none_or(|c| r.subject.capability.as_ref() == Some(c))
            && self.uid.is_none_or(|u| r.actor.uid == u)
            && self
                .correlation
                .as_ref()
                .is_none_or(|c| &r.correlation == c)
    }
}

fn parse_at(path: &Path, line: u64, seq: u64, bytes: &[u8]) -> Result<Record, AuditError> {
    let r = Record::parse_line(bytes).map_err(|msg| AuditError::Corrupt {
        path: path.to_path_buf(),
        line,
        seq,
        msg,
    })?;
    if r.seq != seq {
        return Err(AuditError::Corrupt {
            path: path.to_path_buf(),
            line,
            seq,
            msg: format!("found seq {} where seq {seq} belongs", r.seq),
        });
    }
    Ok(r)
}

/// Calls `f` for every complete record in log order (a torn last line is skipped); `f` returns
/// `false` to stop. Errors name the file, line and seq of an unreadable record.
pub fn for_each_record(
    dir: &Path,
    mut f: impl FnMut(&Record, &[u8]) -> bool,
) -> Result<(), AuditError> {
    let mut seq = 0u64;
    for seg in store::segments(dir)? {
        let bytes = fs::read(&seg.path).map_err(io_err(&seg.path, "read"))?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        for (i, line) in bytes[..complete]
            .split(|&b| b == b'\n')
            .take(bytes[..complete].iter().filter(|&&b| b == b'\n').count())
            .enumerate()
        {
            let r = parse_at(&seg.path, i as u64 + 1, seq, line)?;
            seq += 1;
            if !f(&r, line) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Follows the log as it grows (for `audit tail -f`): remembers where it stopped in the active
/// segment and notices rotation.
#[derive(Debug)]
pub struct Follower {
    dir: PathBuf,
    next_seq: u64,
    active: Option<(u64, u64, u64)>,
}

impl Follower {
    /// A follower that will report records from `next_seq` on.
    pub fn new(dir: &Path, next_seq: u64) -> Self {
        Follower {
            dir: dir.to_path_buf(),
            next_seq,
            active: None,
        }
    }

    /// Returns the records appended since the last call.
    pub fn poll(&mut self) -> Result<Vec<Record>, AuditError> {
        let path = self.dir.join(store::ACTIVE);
        let mut out = Vec::new();
        if let (Some((ino, off, line)), Ok(meta)) = (self.active, fs::metadata(&path)) {
            if meta.ino() == ino {
                if meta.len() <= off {
                    return Ok(out);
                }
                let mut f = File::open(&path).map_err(io_err(&path, "open"))?;
                let mut buf = Vec::new();
                f.seek(SeekFrom::Start(off))
                    .and_then(|_| f.read_to_end(&mut buf))
                    .map_err(io_err(&path, "read"))?;
                let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
                let mut ln = line;
                for l in buf[..complete].split(|&b| b == b'\n') {
                    if l.is_empty() {
                        continue;
                    }
                    ln += 1;
                    out.push(parse_at(&path, ln, self.next_seq, l)?);
                    self.next_seq += 1;
                }
                self.active = Some((ino, off + complete as u64, ln));
                return Ok(out);
            }
        }
        // First call or after rotation: scan everything from next_seq.
        let from = self.next_seq;
        let mut last = from;
        for_each_record(&self.dir, |r, _| {
            if r.seq >= from {
                out.push(r.clone());
                last = r.seq + 1;
            }
            true
        })?;
        self.next_seq = last.max(from);
        if let Ok(meta) = fs::metadata(&path) {
            let bytes = fs::read(&path).unwrap_or_default();
            let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            let lines = bytes[..complete].iter().filter(|&&b| b == b'\n').count() as u64;
            self.active = Some((meta.ino(), complete as u64, lines));
        }
        Ok(out)
    }
}

/// Quotes one CSV field (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV header matching [`csv_row`].
pub const CSV_HEADER: &str = "seq,time,uid,gid,pid,exe,via,action,image,digest,capability,command,decision,reason,rule,tier,details,correlation";

/// One record as a CSV row (nested values as JSON text).
pub fn csv_row(r: &Record) -> String {
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    let via = serde_json::to_value(r.actor.via)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let fields = [
        r.seq.to_string(),
        r.time.clone(),
        r.actor.uid.to_string(),
        r.actor.gid.to_string(),
        r.actor.pid.to_string(),
        opt(&r.actor.exe),
        via,
        r.action.clone(),
        opt(&r.subject.image),
        opt(&r.subject.digest),
        opt(&r.subject.capability),
        r.subject
            .command
            .as_ref()
            .map(|c| serde_json::to_string(c).unwrap_or_default())
            .unwrap_or_default(),
        r.decision.as_str().to_string(),
        r.reason.clone(),
        opt(&r.policy.rule),
        opt(&r.policy.tier),
        serde_json::to_string(&r.details).unwrap_or_default(),
        r.correlation.clone(),
    ];
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}
