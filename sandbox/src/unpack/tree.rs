//! Directory-tree operations that never follow symlinks: open, remove, make read-only.

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::MAX_WALK_DEPTH;

/// Removes a tree we created (staging), never following symlinks.
pub(super) fn remove_tree(path: &Path) {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    if let Ok(p) = open_dir(parent) {
        let _ = remove_all_at(p.as_fd(), name.as_bytes(), 0);
    }
    if path.exists() {
        let _ = fs::remove_dir_all(path);
    }
}

pub(super) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Removes `name` in `dir` (a file, symlink or whole tree) without following symlinks.
pub(super) fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8], depth: usize) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    if depth > MAX_WALK_DEPTH {
        return Err(io::Error::other("directory tree too deep"));
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for ent in rustix::fs::Dir::read_from(&sub)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    for n in names {
        remove_all_at(sub.as_fd(), &n, depth + 1)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// Clears the write bits of every file and directory under `dir` (symlinks have no mode).
pub(super) fn make_read_only(dir: BorrowedFd<'_>, depth: usize) -> io::Result<()> {
    if depth > MAX_WALK_DEPTH {
        return Err(io::Error::other("directory tree too deep"));
    }
    let st = rustix::fs::fstat(dir)?;
    rustix::fs::fchmod(dir, Mode::from_raw_mode(st.st_mode & 0o7555))?;
    let mut subdirs = Vec::new();
    for ent in rustix::fs::Dir::read_from(dir)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        match ent.file_type() {
            FileType::Directory => subdirs.push(n.to_vec()),
            FileType::Symlink => {}
            _ => {
                let st = rustix::fs::statat(dir, n, AtFlags::SYMLINK_NOFOLLOW)?;
                if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                    && st.st_mode & 0o222 != 0
                {
                    // A regular file (checked with NOFOLLOW just above, and nothing else writes
                    // to the staging dir), so chmodat follows no symlink.
                    rustix::fs::chmodat(
                        dir,
                        n,
                        Mode::from_raw_mode(st.st_mode & 0o7555),
                        AtFlags::empty(),
                    )?;
                }
            }
        }
    }
    for n in subdirs {
        let sub = rustix::fs::openat(
            dir,
            n.as_slice(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        make_read_only(sub.as_fd(), depth + 1)?;
    }
    Ok(())
}
