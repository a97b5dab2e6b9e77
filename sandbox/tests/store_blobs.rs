//! The content-addressed blob store: verified ingest, nothing kept on mismatch, verifying reads,
//! coalesced concurrent ingests, ls and gc.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use perry_policies::Digest;
use perry_runtime::store::{digest_of, Begin, BlobStore, StoreError};

fn store() -> (tempfile::TempDir, BlobStore) {
    let t = tempfile::tempdir().unwrap();
    let s = BlobStore::open_in(t.path()).unwrap();
    (t, s)
}

fn names(s: &BlobStore) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(s.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn ingest_stores_under_its_digest_read_only() {
    let (t, s) = store();
    let data = b"hello blob".to_vec();
    let d = digest_of(&data);
    let info = s.ingest(&data[..], &d, Some(data.len() as u64)).unwrap();
    assert_eq!(info.digest, d);
    assert_eq!(info.size, data.len() as u64);
    let path = t.path().join("blobs/sha256").join(d.hex());
    assert_eq!(s.path(&d), path);
    assert_eq!(fs::read(&path).unwrap(), data);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o444
    );
    assert_eq!(names(&s), vec![d.hex().to_string()], "no temp file left");
    let mut back = Vec::new();
    s.open(&d).unwrap().read_to_end(&mut back).unwrap();
    assert_eq!(back, data);
}

#[test]
fn digest_mismatch_keeps_nothing_and_names_both_digests() {
    let (_t, s) = store();
    let claimed = digest_of(b"what the manifest says");
    let err = s
        .ingest(&b"what the registry sent"[..], &claimed, None)
        .unwrap_err();
    match &err {
        StoreError::DigestMismatch { expected, actual } => {
            assert_eq!(expected, &claimed);
            assert_eq!(actual, &digest_of(b"what the registry sent"));
        }
        other => panic!("wrong error {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(claimed.as_str())
            && msg.contains(digest_of(b"what the registry sent").as_str()),
        "{msg}"
    );
    assert!(names(&s).is_empty(), "nothing kept: {:?}", names(&s));
    assert!(!s.contains(&claimed));
}

#[test]
fn size_mismatch_short_and_long_keeps_nothing() {
    let (_t, s) = store();
    let data = b"0123456789";
    let d = digest_of(data);
    let err = s.ingest(&data[..], &d, Some(11)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SizeMismatch {
                expected: 11,
                actual: 10,
                ..
            }
        ),
        "{err:?}"
    );
    let err = s.ingest(&data[..], &d, Some(4)).unwrap_err();
    assert!(
        matches!(err, StoreError::SizeMismatch { expected: 4, .. }),
        "{err:?}"
    );
    assert!(names(&s).is_empty());
    // The right size is accepted.
    s.ingest(&data[..], &d, Some(10)).unwrap();
    assert!(s.contains(&d));
}

struct FailingReader(usize);
impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0 == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "network dropped",
            ));
        }
        self.0 -= 1;
        buf[0] = b'x';
        Ok(1)
    }
}

#[test]
fn source_error_midway_keeps_nothing() {
    let (_t, s) = store();
    let d = digest_of(b"xxxxx");
    let err = s.ingest(FailingReader(3), &d, None).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(d.as_str()));
    assert!(names(&s).is_empty());
}

#[test]
fn writer_dropped_without_commit_keeps_nothing() {
    let (_t, s) = store();
    let d = digest_of(b"abc");
    let Begin::Write(mut w) = s.begin(&d, Some(3)).unwrap() else {
        panic!("expected a writer")
    };
    w.write_all(b"ab").unwrap();
    assert_eq!(w.written(), 2);
    drop(w);
    assert!(names(&s).is_empty());
    // Push API commit works and a second begin reports Present.
    let Begin::Write(mut w) = s.begin(&d, Some(3)).unwrap() else {
        panic!("expected a writer")
    };
    w.push(b"abc").unwrap();
    w.commit().unwrap();
    assert!(matches!(s.begin(&d, Some(3)).unwrap(), Begin::Present(i) if i.size == 3));
}

#[test]
fn open_reverifies_and_removes_a_tampered_blob() {
    let (_t, s) = store();
    let data = vec![7u8; 100_000];
    let d = digest_of(&data);
    s.ingest(&data[..], &d, None).unwrap();
    let path = s.path(&d);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut tampered = data.clone();
    tampered[50_000] = 8;
    fs::write(&path, &tampered).unwrap();

    let mut r = s.open(&d).unwrap();
    let mut out = Vec::new();
    let e = r.read_to_end(&mut out).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    match r.io_error(e) {
        StoreError::Corrupt { digest, actual } => {
            assert_eq!(digest, d);
            assert_eq!(actual, digest_of(&tampered));
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(!path.exists(), "corrupt blob removed so it is pulled again");
    assert!(matches!(s.open(&d).unwrap_err(), StoreError::NotFound(_)));
}

#[test]
fn read_verified_refuses_oversized_and_corrupt() {
    let (_t, s) = store();
    let data = vec![1u8; 1000];
    let d = digest_of(&data);
    s.ingest(&data[..], &d, None).unwrap();
    assert_eq!(s.read_verified(&d, 1000).unwrap(), data);
    assert!(matches!(
        s.read_verified(&d, 999).unwrap_err(),
        StoreError::TooLarge {
            size: 1000,
            limit: 999,
            ..
        }
    ));
    fs::set_permissions(s.path(&d), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(s.path(&d), vec![2u8; 1000]).unwrap();
    assert!(matches!(
        s.read_verified(&d, 1000).unwrap_err(),
        StoreError::Corrupt { .. }
    ));
}

/// A slow source that counts how many times it was read from at all.
struct Counted {
    data: Vec<u8>,
    pos: usize,
    opened: Arc<AtomicUsize>,
    touched: bool,
}
impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.touched {
            self.touched = true;
            self.opened.fetch_add(1, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(2));
        let n = buf.len().min(1024).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn concurrent_ingests_of_one_digest_coalesce_to_one_writer() {
    let (_t, s) = store();
    let data: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let d = digest_of(&data);
    let opened = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (s, d, data, opened, barrier) = (
                s.clone(),
                d.clone(),
                data.clone(),
                opened.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                s.ingest(
                    Counted {
                        data,
                        pos: 0,
                        opened,
                        touched: false,
                    },
                    &d,
                    None,
                )
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap().size, data.len() as u64);
    }
    assert_eq!(
        opened.load(Ordering::SeqCst),
        1,
        "exactly one source was downloaded"
    );
    assert_eq!(names(&s), vec![d.hex().to_string()]);
}

#[test]
fn a_waiter_takes_over_when_the_writer_fails() {
    let (_t, s) = store();
    let good = vec![9u8; 20_000];
    let d = digest_of(&good);
    let s2 = s.clone();
    let d2 = d.clone();
    let Begin::Write(mut bad) = s.begin(&d, None).unwrap() else {
        panic!()
    };
    let waiter = std::thread::spawn(move || s2.ingest(&vec![9u8; 20_000][..], &d2, None));
    std::thread::sleep(Duration::from_millis(50));
    bad.push(b"corrupted bytes").unwrap();
    assert!(matches!(
        bad.commit().unwrap_err(),
        StoreError::DigestMismatch { .. }
    ));
    let info = waiter.join().unwrap().unwrap();
    assert_eq!(info.size, 20_000);
    assert_eq!(fs::read(s.path(&d)).unwrap(), good);
}

#[test]
fn ls_lists_blobs_sorted_and_skips_junk() {
    let (_t, s) = store();
    let mut ds = Vec::new();
    for i in 0..3u8 {
        let data = vec![i; 10 + i as usize];
        let d = digest_of(&data);
        s.ingest(&data[..], &d, None).unwrap();
        ds.push((d, 10 + i as u64));
    }
    fs::write(s.dir().join("not-a-digest"), b"x").unwrap();
    fs::write(s.dir().join(".tmp-abc-1-1"), b"x").unwrap();
    ds.sort();
    let ls = s.ls().unwrap();
    assert_eq!(
        ls.iter()
            .map(|i| (i.digest.clone(), i.size))
            .collect::<Vec<_>>(),
        ds
    );
    assert!(ls.iter().all(|i| i.modified > SystemTime::UNIX_EPOCH));
}

#[test]
fn gc_removes_unkept_blobs_and_stale_temp_files() {
    let (_t, s) = store();
    let a = b"keep me".to_vec();
    let b = b"drop me".to_vec();
    let (da, db) = (digest_of(&a), digest_of(&b));
    s.ingest(&a[..], &da, None).unwrap();
    s.ingest(&b[..], &db, None).unwrap();
    let stale = s.dir().join(format!(".tmp-{}-999999-0", "0".repeat(64)));
    let fresh = s.dir().join(format!(".tmp-{}-999999-1", "1".repeat(64)));
    fs::write(&stale, b"abandoned").unwrap();
    fs::write(&fresh, b"being written").unwrap();
    let old = SystemTime::now() - Duration::from_secs(3 * 3600);
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();

    let keep: HashSet<Digest> = [da.clone()].into_iter().collect();
    let report = s.gc(&keep).unwrap();
    assert_eq!(report.removed, vec![db.clone()]);
    assert_eq!(report.temp_files_removed, 1);
    assert_eq!(report.freed_bytes, b.len() as u64 + 9);
    assert!(s.contains(&da));
    assert!(!s.contains(&db));
    assert!(!stale.exists());
    assert!(
        fresh.exists(),
        "a recent temp file may belong to a live writer"
    );
}
