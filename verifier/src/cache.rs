//! The digest-keyed verification cache: a decision, once made, is reused for a while.
//!
//! Verification is the slow part of every run (registry round trips, certificate chains, log
//! proofs); a digest never changes content, so the decision for (digest, trusted root, matching
//! rules) can be reused. The key hashes all three — plus the platform manifest and repository,
//! since both are part of what is decided — so a new root or any edit to a matching rule misses.
//!
//! Entries live in memory and on disk under `<state_dir>/verify-cache/`. Each disk entry
//! carries an HMAC-SHA256 under a local key (`mac.key`, 0600, held in zeroizing memory) and
//! names its own cache key inside the MAC'd body, so a tampered, truncated, swapped or foreign
//! entry is ignored and the image re-verified. Files are written temp + fsync + rename.
//! Allow decisions live for `cache_ttl` (default 24 h), refusals for the shorter
//! `negative_cache_ttl`. Concurrent verifications of one key coalesce ([`VerifyCache::flight`]).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use perry_policies::{Digest, TrustRule};
use ring::hmac;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::image::Record;

/// A cache key: SHA-256 over the decision's inputs.
pub type CacheKey = [u8; 32];

/// SHA-256 of one trust rule's canonical text (precomputed once per rule).
pub fn rule_hash(rule: &TrustRule) -> [u8; 32] {
    Sha256::digest(rule.canonical().as_bytes()).into()
}

/// Feeds `parts` to `h`, each prefixed with its length, so no two different part lists hash
/// alike.
fn update_parts(h: &mut Sha256, parts: &[&[u8]]) {
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
}

/// One hash for an ordered list of matching rules, from their [`rule_hash`]es.
pub fn rules_digest<'a>(hashes: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"rules");
    for r in hashes {
        h.update(r);
    }
    h.finalize().into()
}

/// Computes the cache key for one decision.
///
/// Inputs, each length-prefixed: the resolved (top-level) manifest digest, the platform
/// manifest digest, the repository name, the trusted root's SHA-256, and the hash of the
/// canonical text of every matching trust rule in order ([`rules_digest`]).
pub fn cache_key(
    digest: &Digest,
    platform_digest: &Digest,
    repository: &str,
    root_sha256: &[u8; 32],
    rules_hash: &[u8; 32],
) -> CacheKey {
    let mut h = Sha256::new();
    update_parts(
        &mut h,
        &[
            digest.as_str().as_bytes(),
            platform_digest.as_str().as_bytes(),
            repository.as_bytes(),
            &root_sha256[..],
            &rules_hash[..],
        ],
    );
    h.finalize().into()
}

/// The key for a digest-pinned reference (`repo@sha256:…`) before it is resolved: content at a
/// digest never changes, so a decision made after resolving (and hashing) it can be found again
/// without a registry round trip. Domain-separated from [`cache_key`]; the platform string is
/// included because it selects the manifest from an index.
pub fn pinned_key(
    requested: &Digest,
    platform: &str,
    repository: &str,
    root_sha256: &[u8; 32],
    rules_hash: &[u8; 32],
) -> CacheKey {
    let inner = cache_key(requested, requested, repository, root_sha256, rules_hash);
    let mut h = Sha256::new();
    h.update(b"perry-verifier pinned-reference key v1\0");
    h.update((platform.len() as u64).to_be_bytes());
    h.update(platform.as_bytes());
    h.update(inner);
    h.finalize().into()
}

/// The key for a tag's resolution to a verified digest (`[trust] tag_ttl`): the tag as written,
/// bound to the platform, the trusted root and the rules like every other key. Only allow
/// decisions are stored under it, and they expire after `tag_ttl`. Domain-separated from the
/// other keys.
pub fn tag_key(
    tag: &str,
    platform: &str,
    repository: &str,
    root_sha256: &[u8; 32],
    rules_hash: &[u8; 32],
) -> CacheKey {
    let mut h = Sha256::new();
    h.update(b"perry-verifier tag key v1\0");
    update_parts(
        &mut h,
        &[
            tag.as_bytes(),
            platform.as_bytes(),
            repository.as_bytes(),
            &root_sha256[..],
            &rules_hash[..],
        ],
    );
    h.finalize().into()
}

/// The key for a decision about an image read from somewhere other than its registry, or
/// checked against a detached bundle: [`cache_key`] (`inner`) bound to the [`Origin`] (kind and
/// canonical path) and to the SHA-256 of the detached bundle, if any. Domain-separated from
/// [`cache_key`] and [`pinned_key`], so a layout decision never answers for a registry image
/// (or another layout, or another bundle) and vice versa.
///
/// [`Origin`]: crate::source::Origin
pub fn source_key(
    inner: &CacheKey,
    origin: &crate::source::Origin,
    bundle_sha256: Option<&[u8; 32]>,
) -> CacheKey {
    let mut h = Sha256::new();
    h.update(b"perry-verifier source key v1\0");
    use std::os::unix::ffi::OsStrExt;
    let (kind, path): (&[u8], &[u8]) = match origin {
        crate::source::Origin::Registry => (b"registry", b""),
        crate::source::Origin::OciLayout(p) => (b"oci", p.as_os_str().as_bytes()),
        crate::source::Origin::OciArchive(p) => (b"oci-archive", p.as_os_str().as_bytes()),
    };
    update_parts(
        &mut h,
        &[
            kind,
            path,
            bundle_sha256.map_or(&[][..], |b| &b[..]),
            &inner[..],
        ],
    );
    h.finalize().into()
}

/// A cached decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// Verified: the facts to rebuild the `VerifiedImage` from.
    Allowed(Record),
    /// Refused: the machine code and the reason in words.
    Denied { code: String, message: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct DiskBody {
    v: u32,
    key: String,
    expires: u64,
    #[serde(flatten)]
    outcome: Outcome,
}

struct MemEntry {
    outcome: Outcome,
    expires: u64,
}

/// The verification cache (memory + optional disk).
pub struct VerifyCache {
    mem: Mutex<HashMap<CacheKey, MemEntry>>,
    disk: Option<Disk>,
    positive_ttl: Duration,
    negative_ttl: Duration,
    flights: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>,
}

struct Disk {
    dir: PathBuf,
    mac_key: Zeroizing<Vec<u8>>,
}

/// File name of the local MAC key inside the cache directory.
pub const MAC_KEY_FILE: &str = "mac.key";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl VerifyCache {
    /// A memory-only cache.
    pub fn in_memory(positive_ttl: Duration, negative_ttl: Duration) -> Self {
        Self {
            mem: Mutex::new(HashMap::new()),
            disk: None,
            positive_ttl,
            negative_ttl,
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// A cache persisted under `dir` (created 0700; the MAC key is created 0600 on first use).
    pub fn on_disk(
        dir: &Path,
        positive_ttl: Duration,
        negative_ttl: Duration,
    ) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let mac_key = load_or_create_key(&dir.join(MAC_KEY_FILE))?;
        let mut c = Self::in_memory(positive_ttl, negative_ttl);
        c.disk = Some(Disk {
            dir: dir.to_path_buf(),
            mac_key,
        });
        Ok(c)
    }

    /// Where entries are stored on disk, if anywhere.
    pub fn dir(&self) -> Option<&Path> {
        self.disk.as_ref().map(|d| d.dir.as_path())
    }

    /// The path of the disk entry for `key`.
    pub fn entry_path(&self, key: &CacheKey) -> Option<PathBuf> {
        self.disk
            .as_ref()
            .map(|d| d.dir.join(format!("{}.entry", hex::encode(key))))
    }

    /// Looks `key` up: memory first, then disk (verifying the MAC). Expired, tampered or
    /// unreadable entries are misses.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Outcome> {
        let t = now();
        {
            let mut mem = self.mem.lock().unwrap_or_else(|p| p.into_inner());
            match mem.get(key) {
                Some(e) if e.expires > t => return Some(e.outcome.clone()),
                Some(_) => {
                    mem.remove(key);
                }
                None => {}
            }
        }
        let body = self.read_disk(key)?;
        if body.expires <= t {
            return None;
        }
        let mut mem = self.mem.lock().unwrap_or_else(|p| p.into_inner());
        mem.insert(
            *key,
            MemEntry {
                outcome: body.outcome.clone(),
                expires: body.expires,
            },
        );
        Some(body.outcome)
    }

    /// Stores a decision (memory, and disk when configured; disk failures are logged, not
    /// fatal: the decision itself was made correctly).
    pub(crate) fn put(&self, key: &CacheKey, outcome: Outcome) {
        let ttl = match outcome {
            Outcome::Allowed(_) => self.positive_ttl,
            Outcome::Denied { .. } => self.negative_ttl,
        };
        self.put_for(key, outcome, ttl);
    }

    /// [`put`](Self::put) with an explicit lifetime (tag resolutions live `tag_ttl`).
    pub(crate) fn put_for(&self, key: &CacheKey, outcome: Outcome, ttl: Duration) {
        let expires = now().saturating_add(ttl.as_secs());
        if let Some(disk) = &self.disk {
            let body = DiskBody {
                v: 1,
                key: hex::encode(key),
                expires,
                outcome: outcome.clone(),
            };
            if let Err(e) = write_entry(disk, key, &body) {
                tracing::warn!(dir = %disk.dir.display(), "could not persist verification cache entry: {e}");
            }
        }
        let mut mem = self.mem.lock().unwrap_or_else(|p| p.into_inner());
        mem.insert(*key, MemEntry { outcome, expires });
    }

    /// Forgets every in-memory entry (the disk copy stays); for tests and benchmarks that
    /// want to exercise the disk path.
    pub fn clear_memory(&self) {
        self.mem.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Single-flight: the lock for `key`. Holders of the guard verify; later callers wait for
    /// it and then find the decision in the cache.
    pub async fn flight(&self, key: &CacheKey) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            f.entry(*key).or_default().clone()
        };
        m.lock_owned().await
    }

    /// Drops the single-flight slot for `key` once nobody else is waiting on it.
    pub(crate) fn land(&self, key: &CacheKey) {
        let mut f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if f.get(key).is_some_and(|m| Arc::strong_count(m) <= 2) {
            f.remove(key);
        }
    }

    fn read_disk(&self, key: &CacheKey) -> Option<DiskBody> {
        let disk = self.disk.as_ref()?;
        let path = self.entry_path(key)?;
        let bytes = fs::read(&path).ok()?;
        match parse_entry(disk, key, &bytes) {
            Ok(b) => Some(b),
            Err(why) => {
                tracing::warn!(path = %path.display(), "ignoring verification cache entry: {why}; re-verifying");
                None
            }
        }
    }
}

fn parse_entry(disk: &Disk, key: &CacheKey, bytes: &[u8]) -> Result<DiskBody, &'static str> {
    let nl = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("no MAC line")?;
    let mac = hex::decode(&bytes[..nl]).map_err(|_| "MAC is not hex")?;
    let body = &bytes[nl + 1..];
    let k = hmac::Key::new(hmac::HMAC_SHA256, &disk.mac_key);
    hmac::verify(&k, body, &mac).map_err(|_| "HMAC does not verify (tampered or foreign)")?;
    let parsed: DiskBody = serde_json::from_slice(body).map_err(|_| "body does not parse")?;
    if parsed.v != 1 || parsed.key != hex::encode(key) {
        return Err("entry belongs to another key");
    }
    Ok(parsed)
}

fn write_entry(disk: &Disk, key: &CacheKey, body: &DiskBody) -> std::io::Result<()> {
    let json = serde_json::to_vec(body).map_err(std::io::Error::other)?;
    let k = hmac::Key::new(hmac::HMAC_SHA256, &disk.mac_key);
    let tag = hmac::sign(&k, &json);
    let mut out = hex::encode(tag.as_ref()).into_bytes();
    out.push(b'\n');
    out.extend_from_slice(&json);
    let path = disk.dir.join(format!("{}.entry", hex::encode(key)));
    write_atomic(&path, &out, 0o600)
}

/// Writes `bytes` to `path` via a temp file in the same directory: write, fsync, rename,
/// fsync the directory.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".tmp-{}-{}-{}",
        std::process::id(),
        now(),
        rand_suffix()
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn rand_suffix() -> String {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    hex::encode(b)
}

/// Reads the MAC key, creating it (32 random bytes, 0600) if absent. A key file readable by
/// others, or of the wrong size, is refused (the caller falls back to a memory-only cache).
fn load_or_create_key(path: &Path) -> std::io::Result<Zeroizing<Vec<u8>>> {
    match fs::metadata(path) {
        Ok(m) => {
            if m.permissions().mode() & 0o077 != 0 {
                return Err(std::io::Error::other(format!(
                    "{} is accessible by group/others (mode {:o}); refusing it",
                    path.display(),
                    m.permissions().mode() & 0o777
                )));
            }
            let key = Zeroizing::new(fs::read(path)?);
            if key.len() != 32 {
                return Err(std::io::Error::other(format!(
                    "{} holds {} bytes, expected 32",
                    path.display(),
                    key.len()
                )));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = Zeroizing::new(vec![0u8; 32]);
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key[..])
                .map_err(|_| std::io::Error::other("no system randomness"))?;
            // Write under a temp name, then link into place: if another process won the race,
            // use its key.
            let dir = path.parent().unwrap_or(Path::new("."));
            let tmp = dir.join(format!(".tmp-key-{}-{}", std::process::id(), rand_suffix()));
            {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(&key)?;
                f.sync_all()?;
            }
            let linked = fs::hard_link(&tmp, path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    fs::File::open(dir)?.sync_all()?;
                    Ok(key)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key(path),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn record() -> Record {
        Record {
            digest: d('a').to_string(),
            platform_digest: d('a').to_string(),
            signed_digest: d('a').to_string(),
            signer_identity: "me@x".into(),
            issuer: "https://i".into(),
            integrated_time: Some(1),
            log_index: Some(2),
            layout: "referrers-tag".into(),
            origin: crate::source::Origin::Registry,
        }
    }

    const DAY: Duration = Duration::from_secs(86400);

    #[test]
    fn key_changes_with_every_input() {
        let root = [1u8; 32];
        let rules = rules_digest([]);
        let base = cache_key(&d('a'), &d('a'), "r/x", &root, &rules);
        assert_ne!(base, cache_key(&d('b'), &d('a'), "r/x", &root, &rules));
        assert_ne!(base, cache_key(&d('a'), &d('b'), "r/x", &root, &rules));
        assert_ne!(base, cache_key(&d('a'), &d('a'), "r/y", &root, &rules));
        assert_ne!(base, cache_key(&d('a'), &d('a'), "r/x", &[2u8; 32], &rules));
        assert_ne!(
            base,
            cache_key(&d('a'), &d('a'), "r/x", &root, &rules_digest([&[1u8; 32]]))
        );
        let p = pinned_key(&d('a'), "linux/amd64", "r/x", &root, &rules);
        assert_ne!(p, base);
        assert_ne!(p, pinned_key(&d('a'), "linux/arm64", "r/x", &root, &rules));
    }

    #[test]
    fn source_keys_separate_origins_and_bundles() {
        use crate::source::Origin;
        let root = [1u8; 32];
        let inner = cache_key(&d('a'), &d('a'), "r/x", &root, &rules_digest([]));
        let reg = source_key(&inner, &Origin::Registry, None);
        let lay = source_key(&inner, &Origin::OciLayout("/l".into()), None);
        let arc = source_key(&inner, &Origin::OciArchive("/l".into()), None);
        let lay2 = source_key(&inner, &Origin::OciLayout("/m".into()), None);
        let b1 = source_key(&inner, &Origin::OciLayout("/l".into()), Some(&[1; 32]));
        let b2 = source_key(&inner, &Origin::OciLayout("/l".into()), Some(&[2; 32]));
        let all = [inner, reg, lay, arc, lay2, b1, b2];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn disk_round_trip_survives_a_new_process() {
        let dir = tempfile::tempdir().unwrap();
        let c = VerifyCache::on_disk(dir.path(), DAY, DAY).unwrap();
        let k = [7u8; 32];
        c.put(&k, Outcome::Allowed(record()));
        let c2 = VerifyCache::on_disk(dir.path(), DAY, DAY).unwrap();
        assert_eq!(c2.get(&k), Some(Outcome::Allowed(record())));
        let mode = fs::metadata(dir.path().join(MAC_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn tampered_entry_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let c = VerifyCache::on_disk(dir.path(), DAY, DAY).unwrap();
        let k = [7u8; 32];
        c.put(
            &k,
            Outcome::Denied {
                code: "verification_failed".into(),
                message: "no".into(),
            },
        );
        let p = c.entry_path(&k).unwrap();
        let text = fs::read_to_string(&p).unwrap();
        // Attacker flips a refusal into an allow, keeping the old MAC.
        let (mac, _) = text.split_once('\n').unwrap();
        let forged = DiskBody {
            v: 1,
            key: hex::encode(k),
            expires: u64::MAX,
            outcome: Outcome::Allowed(record()),
        };
        fs::write(
            &p,
            format!("{mac}\n{}", serde_json::to_string(&forged).unwrap()),
        )
        .unwrap();
        let fresh = VerifyCache::on_disk(dir.path(), DAY, DAY).unwrap();
        assert_eq!(fresh.get(&k), None);
        // Corrupt bytes: also a miss, not a panic.
        fs::write(&p, b"\xff\xff\n\x00garbage").unwrap();
        assert_eq!(fresh.get(&k), None);
        fs::write(&p, b"").unwrap();
        assert_eq!(fresh.get(&k), None);
    }

    #[test]
    fn entry_copied_under_another_key_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let c = VerifyCache::on_disk(dir.path(), DAY, DAY).unwrap();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        c.put(&a, Outcome::Allowed(record()));
        fs::copy(c.entry_path(&a).unwrap(), c.entry_path(&b).unwrap()).unwrap();
        let fresh = VerifyCache::on_disk(dir.path(), DAY, DAY).unwrap();
        assert_eq!(fresh.get(&b), None);
        assert!(fresh.get(&a).is_some());
    }

    #[test]
    fn entry_made_with_another_mac_key_is_ignored() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let k = [3u8; 32];
        let c1 = VerifyCache::on_disk(d1.path(), DAY, DAY).unwrap();
        c1.put(&k, Outcome::Allowed(record()));
        let c2 = VerifyCache::on_disk(d2.path(), DAY, DAY).unwrap();
        fs::copy(c1.entry_path(&k).unwrap(), c2.entry_path(&k).unwrap()).unwrap();
        assert_eq!(c2.get(&k), None);
    }

    #[test]
    fn expired_entries_are_misses() {
        let c = VerifyCache::in_memory(Duration::ZERO, Duration::ZERO);
        let k = [9u8; 32];
        c.put(&k, Outcome::Allowed(record()));
        assert_eq!(c.get(&k), None);
    }

    #[test]
    fn world_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(MAC_KEY_FILE);
        fs::write(&p, [0u8; 32]).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(VerifyCache::on_disk(dir.path(), DAY, DAY).is_err());
    }
}
