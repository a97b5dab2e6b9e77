//! The on-disk layout of an audit directory and the low-level file operations shared by the
//! writer, the verifier and the review commands.
//!
//! ```text
//! <audit dir>/
//!   log.jsonl                      active segment: canonical JSON records, one per line
//!   log-00000000000000000000.jsonl sealed segments, named by the seq of their first record
//!   checkpoint                     latest signed checkpoint (C2SP tlog-checkpoint note)
//!   signing-key.pk8                Ed25519 private key (PKCS#8, 0600)
//!   key.vkey                       the matching note verifier key, for reviewers
//!   leaves.bin                     hint: leaf hash of every record as written (32 bytes each)
//!   writer.state                   hint: the writer's tree and position at the latest checkpoint,
//!                                  so opening resumes there instead of replaying every segment
//!   log.lock                       flock that serialises writers across processes
//!   quarantine/                    torn last lines cut off after crashes, one file each
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::AuditError;
use crate::note::{NoteSigner, NoteVerifier};

/// Active segment file name.
pub const ACTIVE: &str = "log.jsonl";
/// Latest checkpoint file name.
pub const CHECKPOINT: &str = "checkpoint";
/// Private key file name.
pub const KEY: &str = "signing-key.pk8";
/// Public verifier key file name.
pub const VKEY: &str = "key.vkey";
/// Leaf-hash hint file name.
pub const LEAVES: &str = "leaves.bin";
/// Writer-state hint file name: lets `AuditLog::open` skip replaying the log up to the latest
/// checkpoint. Validated against the checkpoint and the segments on every use; when missing or
/// stale the writer replays the log instead.
pub const STATE: &str = "writer.state";
/// Writer lock file name.
pub const LOCK: &str = "log.lock";
/// Quarantine directory name.
pub const QUARANTINE: &str = "quarantine";

/// One segment file of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its path.
    pub path: PathBuf,
    /// Seq of its first record, from the file name (`None` for the active segment).
    pub first_seq: Option<u64>,
}

/// The file name of a sealed segment starting at `first_seq`.
pub fn sealed_name(first_seq: u64) -> String {
    format!("log-{first_seq:020}.jsonl")
}

fn parse_sealed(name: &str) -> Option<u64> {
    let n = name.strip_prefix("log-")?.strip_suffix(".jsonl")?;
    if n.len() != 20 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

pub(crate) fn io_err(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> AuditError {
    let path = path.to_path_buf();
    move |e| AuditError::Io {
        path,
        op,
        msg: e.to_string(),
    }
}

/// Lists the segments in log order: sealed ones by first seq, then the active one (if present).
pub fn segments(dir: &Path) -> Result<Vec<Segment>, AuditError> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir, "list")(e)),
    };
    for ent in rd {
        let ent = ent.map_err(io_err(dir, "list"))?;
        let name = ent.file_name();
        if let Some(seq) = name.to_str().and_then(parse_sealed) {
            out.push(Segment {
                path: ent.path(),
                first_seq: Some(seq),
            });
        }
    }
    out.sort_by_key(|s| s.first_seq);
    let active = dir.join(ACTIVE);
    if active.exists() {
        out.push(Segment {
            path: active,
            first_seq: None,
        });
    }
    Ok(out)
}

/// fsyncs a directory so renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}

/// Writes `data` to `path` atomically: temp file, fsync, rename, fsync directory.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), AuditError> {
    write_atomic_then(path, data, mode, || {})
}

/// [`write_atomic`], running `after_rename` between the rename and the directory fsync: what it
/// renames into the same directory is made durable by that one fsync, right after `path`.
pub(crate) fn write_atomic_then(
    path: &Path,
    data: &[u8],
    mode: u32,
    after_rename: impl FnOnce(),
) -> Result<(), AuditError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().and_then(|s| s.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp, "create"))?;
    f.write_all(data).map_err(io_err(&tmp, "write"))?;
    f.sync_all().map_err(io_err(&tmp, "fsync"))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err(path, "rename into place"))?;
    after_rename();
    sync_dir(dir)
}

/// Creates the audit directory (0700) if needed.
pub fn ensure_dir(dir: &Path) -> Result<(), AuditError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir, "create directory"))?;
    }
    Ok(())
}

/// Loads the signing key, generating it (0600) on first use. Call with the writer lock held.
pub fn load_or_create_key(dir: &Path, origin: &str) -> Result<NoteSigner, AuditError> {
    let path = dir.join(KEY);
    let key_err = |msg: String| AuditError::Key {
        path: path.clone(),
        msg,
    };
    let pkcs8 = match File::open(&path) {
        Ok(mut f) => {
            let mode = f.metadata().map_err(io_err(&path, "stat"))?.mode();
            if mode & 0o077 != 0 {
                return Err(key_err(format!(
                    "permissions {:o} let others read the signing key; run chmod 600",
                    mode & 0o777
                )));
            }
            let mut buf = Zeroizing::new(Vec::new());
            f.read_to_end(&mut buf).map_err(io_err(&path, "read"))?;
            buf
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = NoteSigner::generate_pkcs8();
            write_atomic(&path, &k, 0o600)?;
            k
        }
        Err(e) => return Err(io_err(&path, "open")(e)),
    };
    let signer = NoteSigner::from_pkcs8(origin, pkcs8).map_err(|e| key_err(e.to_string()))?;
    let vkey_path = dir.join(VKEY);
    let vkey = format!("{}\n", signer.verifier().to_vkey());
    if fs::read_to_string(&vkey_path).ok().as_deref() != Some(vkey.as_str()) {
        write_atomic(&vkey_path, vkey.as_bytes(), 0o644)?;
    }
    Ok(signer)
}

/// Reads the published verifier key (`key.vkey`) of an audit directory.
pub fn read_vkey(dir: &Path) -> Result<NoteVerifier, AuditError> {
    let path = dir.join(VKEY);
    let s = fs::read_to_string(&path).map_err(io_err(&path, "read"))?;
    NoteVerifier::parse(&s).map_err(|e| AuditError::Key {
        path,
        msg: e.to_string(),
    })
}

/// Opens (creating) the lock file and takes the exclusive writer lock.
pub fn lock(dir: &Path) -> Result<File, AuditError> {
    let path = dir.join(LOCK);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path, "open"))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
        AuditError::Io {
            path: path.clone(),
            op: "lock",
            msg: e.to_string(),
        }
    })?;
    Ok(f)
}

/// Releases the writer lock.
pub fn unlock(f: &File) {
    let _ = rustix::fs::flock(f, rustix::fs::FlockOperation::Unlock);
}

/// Moves torn bytes into the quarantine directory (durably) and returns the file written.
pub fn quarantine(dir: &Path, after_seq: u64, bytes: &[u8]) -> Result<PathBuf, AuditError> {
    let qdir = dir.join(QUARANTINE);
    ensure_dir(&qdir)?;
    let name = format!(
        "torn-seq-{after_seq:020}-{}.jsonl.part",
        crate::timefmt::now_micros()
    );
    let path = qdir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path, "create"))?;
    f.write_all(bytes).map_err(io_err(&path, "write"))?;
    f.sync_all().map_err(io_err(&path, "fsync"))?;
    sync_dir(&qdir)?;
    sync_dir(dir)?;
    Ok(path)
}

/// A quarantined torn line, as reported by verification.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Quarantined {
    /// The quarantine file.
    pub path: PathBuf,
    /// The seq the torn record would have had.
    pub seq: u64,
    /// How many bytes were cut off.
    pub bytes: u64,
}

/// Lists quarantined torn lines.
pub fn quarantined(dir: &Path) -> Result<Vec<Quarantined>, AuditError> {
    let qdir = dir.join(QUARANTINE);
    let mut out = Vec::new();
    let rd = match fs::read_dir(&qdir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(&qdir, "list")(e)),
    };
    for ent in rd {
        let ent = ent.map_err(io_err(&qdir, "list"))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        let seq = name
            .strip_prefix("torn-seq-")
            .and_then(|r| r.get(..20))
            .and_then(|n| n.parse().ok())
            .unwrap_or(u64::MAX);
        let bytes = ent.metadata().map(|m| m.len()).unwrap_or(0);
        out.push(Quarantined {
            path: ent.path(),
            seq,
            bytes,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Checks a private-key file mode (for tests and `audit key`).
pub fn key_mode(dir: &Path) -> Option<u32> {
    fs::metadata(dir.join(KEY))
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}
