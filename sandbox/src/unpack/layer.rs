//! One layer stream: decompress, count, hash against its diff_id, walk the tar entries.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::rc::Rc;

use perry_policies::Digest;
use sha2::{Digest as _, Sha256};

use super::entry::Unpacker;
use super::error::{io_kind, UnpackError, UnpackErrorKind};
use super::tree::open_dir;
use super::{LayerSpec, Limits, UnpackReport};
use crate::manifest::LayerMediaType;
use crate::store::StoreError;

/// Unpacks one layer (compressed bytes from `reader`) into the existing directory `root`, with
/// all the checks described in the module docs, including the diff_id. Exists for tests, benches
/// and callers that manage their own target directory; it does not make the tree read-only and
/// does not clean up on failure (the caller owns `root`).
pub fn unpack_layer_into<R: Read>(
    root: &Path,
    reader: R,
    layer: &LayerSpec,
    limits: &Limits,
) -> Result<UnpackReport, UnpackError> {
    let fd = open_dir(root).map_err(|e| {
        UnpackError::new(
            Some(&layer.digest),
            None,
            io_kind("cannot open the target dir", e),
        )
    })?;
    unpack_layer_fd(fd.as_fd(), reader, layer, limits)
}

/// Counts, hashes and limits the uncompressed stream.
struct Tally {
    bytes: u64,
    limit: u64,
    exceeded: bool,
    hasher: Sha256,
}

struct Counting<R> {
    inner: R,
    tally: Rc<RefCell<Tally>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut t = self.tally.borrow_mut();
        t.bytes += n as u64;
        if t.bytes > t.limit {
            t.exceeded = true;
            return Err(io::Error::other("layer size limit exceeded"));
        }
        t.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn decoder<'a, R: Read + 'a>(
    media_type: LayerMediaType,
    reader: R,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match media_type {
        LayerMediaType::Tar => Box::new(reader),
        LayerMediaType::TarGzip => {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(reader)))
        }
        LayerMediaType::TarZstd => {
            let mut d = zstd::stream::read::Decoder::new(reader)?;
            // Refuse frames that ask for more than a 128 MiB window (memory bomb).
            d.window_log_max(27)?;
            Box::new(d)
        }
    })
}

pub(super) fn unpack_layer_fd<R: Read>(
    root: BorrowedFd<'_>,
    reader: R,
    layer: &LayerSpec,
    limits: &Limits,
) -> Result<UnpackReport, UnpackError> {
    let digest = &layer.digest;
    let tally = Rc::new(RefCell::new(Tally {
        bytes: 0,
        limit: limits.max_layer_size,
        exceeded: false,
        hasher: Sha256::new(),
    }));
    let stream_err = |tally: &Rc<RefCell<Tally>>, e: io::Error| {
        let kind = if tally.borrow().exceeded {
            UnpackErrorKind::TooLarge {
                limit: limits.max_layer_size,
            }
        } else if e.get_ref().is_some_and(|i| i.is::<StoreError>()) {
            UnpackErrorKind::Blob(crate::store::into_store_error(
                e,
                digest,
                Path::new("(blob)"),
            ))
        } else {
            UnpackErrorKind::Malformed(e)
        };
        UnpackError::new(Some(digest), None, kind)
    };
    let decoded = decoder(layer.media_type, reader).map_err(|e| stream_err(&tally, e))?;
    let counting = Counting {
        inner: decoded,
        tally: tally.clone(),
    };
    let mut archive = tar::Archive::new(counting);
    let mut unpacker = Unpacker {
        root,
        limits,
        chown: rustix::process::geteuid().is_root(),
        this_layer: HashSet::new(),
        dir_times: Vec::new(),
        report: UnpackReport::default(),
    };
    {
        let entries = archive.entries().map_err(|e| stream_err(&tally, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| stream_err(&tally, e))?;
            unpacker.report.entries += 1;
            if unpacker.report.entries > limits.max_layer_entries {
                return Err(UnpackError::new(
                    Some(digest),
                    None,
                    UnpackErrorKind::TooManyEntries {
                        limit: limits.max_layer_entries,
                    },
                ));
            }
            let path = entry.path_bytes().into_owned();
            unpacker.entry(entry).map_err(|kind| {
                // A read error inside an entry's data may really be the size limit.
                let kind = match kind {
                    UnpackErrorKind::Io { .. } | UnpackErrorKind::Malformed(_)
                        if tally.borrow().exceeded =>
                    {
                        UnpackErrorKind::TooLarge {
                            limit: limits.max_layer_size,
                        }
                    }
                    k => k,
                };
                UnpackError::new(Some(digest), Some(&path), kind)
            })?;
        }
    }
    // Drain padding and anything after the end-of-archive marker so the diff_id covers every
    // byte of the uncompressed stream.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| stream_err(&tally, e))?;
    unpacker.finish_dirs();
    let mut report = unpacker.report;
    let t = tally.borrow();
    report.tar_bytes = t.bytes;
    let actual = Digest::from_sha256(&t.hasher.clone().finalize().into());
    if actual != layer.diff_id {
        return Err(UnpackError::new(
            Some(digest),
            None,
            UnpackErrorKind::DiffIdMismatch {
                expected: layer.diff_id.clone(),
                actual,
            },
        ));
    }
    Ok(report)
}

/// A numeric header field; an empty field (all NUL or spaces, as some writers leave unused
/// fields) reads as 0, like Go's `archive/tar`. Garbage is `None`.
pub(super) fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> Option<u64> {
    match parsed {
        Ok(v) => Some(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Some(0),
        Err(_) => None,
    }
}
