//! One tar entry applied to the staging root: path resolution inside the root, the entry types,
//! whiteouts, metadata.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use super::error::{io_kind, refused, UnpackErrorKind};
use super::layer::numeric;
use super::tree::remove_all_at;
use super::{Limits, UnpackReport};

/// Splits an entry name into components: drops empty and `.` components; refuses absolute
/// paths, `..`, and NUL bytes.
pub(super) fn components(path: &[u8]) -> Result<Vec<&[u8]>, UnpackErrorKind> {
    if path.first() == Some(&b'/') {
        return Err(refused("absolute path"));
    }
    if path.contains(&0) {
        return Err(refused("NUL byte in path"));
    }
    let mut out = Vec::new();
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(refused("`..` component (path traversal)")),
            c => out.push(c),
        }
    }
    Ok(out)
}

pub(super) fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Applies one layer's entries to the staging root.
pub(super) struct Unpacker<'a> {
    /// The staging root every path resolves inside.
    pub(super) root: BorrowedFd<'a>,
    pub(super) limits: &'a Limits,
    /// Whether to apply the headers' uid/gid (only when unpacking as root).
    pub(super) chown: bool,
    /// Every path (and parent path) this layer created, for whiteout semantics.
    pub(super) this_layer: HashSet<Vec<u8>>,
    /// Directory mtimes, applied after the layer (creating children changes them).
    pub(super) dir_times: Vec<(Vec<u8>, u64)>,
    pub(super) report: UnpackReport,
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
}

impl Unpacker<'_> {
    pub(super) fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
    ) -> Result<(), UnpackErrorKind> {
        let raw_path = entry.path_bytes().into_owned();
        let comps = components(&raw_path)?;
        let header = entry.header();
        let etype = header.entry_type();
        let meta = self.meta(header)?;

        // Extended attributes travel in PAX records; all are dropped (see module docs).
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let key = ext.key_bytes();
                if key.starts_with(b"SCHILY.xattr.") || key.starts_with(b"LIBARCHIVE.xattr.") {
                    self.report.dropped_xattrs += 1;
                }
            }
        }

        // Whiteouts are recognised by name, whatever their type.
        if let Some(last) = comps.last() {
            if let Some(target) = last.strip_prefix(b".wh.") {
                let parent = &comps[..comps.len() - 1];
                if target == b".wh..opq" {
                    return self.opaque(parent);
                }
                if target.starts_with(b".wh.") {
                    return Ok(()); // aufs bookkeeping (.wh..wh.plnk, …)
                }
                if target.is_empty() || target == b"." || target == b".." {
                    return Err(refused("whiteout of an invalid name"));
                }
                return self.whiteout(parent, target);
            }
        }

        use tar::EntryType as T;
        match etype {
            T::Regular | T::Continuous => {
                let (parent, name) = self.split_create(&comps)?;
                let size = entry.size();
                if self.report.file_bytes.saturating_add(size) > self.limits.max_layer_size {
                    return Err(UnpackErrorKind::TooLarge {
                        limit: self.limits.max_layer_size,
                    });
                }
                self.clear(&parent, name, false)?;
                let fd = rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| io_kind("cannot create file", e))?;
                let mut file = File::from(fd);
                let copied = io::copy(&mut (&mut entry).take(size), &mut file)
                    .map_err(UnpackErrorKind::Malformed)?;
                if copied != size {
                    return Err(UnpackErrorKind::Malformed(
                        io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
                file.flush().map_err(|e| io_kind("cannot write file", e))?;
                self.report.file_bytes += size;
                self.apply_fd(file.as_fd(), &meta)?;
                self.times_at(&parent, name, meta.mtime);
                self.report.files += 1;
                self.created(&comps);
            }
            T::Directory => {
                if comps.is_empty() {
                    // `./`: the root's own metadata.
                    self.apply_fd(self.root, &meta)?;
                    self.report.dirs += 1;
                    return Ok(());
                }
                let (parent, name) = self.split_create(&comps)?;
                if !self.clear(&parent, name, true)? {
                    rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| io_kind("cannot create directory", e))?;
                }
                let dir = rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io_kind("cannot open directory", e))?;
                self.apply_fd(dir.as_fd(), &meta)?;
                self.dir_times.push((join(&comps), meta.mtime));
                self.report.dirs += 1;
                self.created(&comps);
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                if target.is_empty() || target.contains(&0) || target.len() > 4095 {
                    return Err(refused("symlink with an empty, overlong or NUL target"));
                }
                let (parent, name) = self.split_create(&comps)?;
                self.clear(&parent, name, false)?;
                rustix::fs::symlinkat(target.as_slice(), &parent, name)
                    .map_err(|e| io_kind("cannot create symlink", e))?;
                if self.chown {
                    rustix::fs::chownat(
                        &parent,
                        name,
                        Some(Uid::from_raw(meta.uid)),
                        Some(Gid::from_raw(meta.gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| io_kind("cannot chown symlink", e))?;
                }
                self.times_at(&parent, name, meta.mtime);
                self.report.symlinks += 1;
                self.created(&comps);
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                let tcomps = components(&target).map_err(|e| match e {
                    UnpackErrorKind::Refused(m) => refused(format!("hardlink target: {m}")),
                    e => e,
                })?;
                if tcomps.is_empty() {
                    return Err(refused("hardlink to the root"));
                }
                if tcomps == comps {
                    return Ok(()); // a link to itself changes nothing
                }
                let tparent = self
                    .resolve_dir(&tcomps[..tcomps.len() - 1], false)
                    .map_err(|e| match e {
                        UnpackErrorKind::Refused(m) => refused(format!("hardlink target: {m}")),
                        e => e,
                    })?;
                let tname = tcomps[tcomps.len() - 1];
                match rustix::fs::statat(&tparent, tname, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                        return Err(refused("hardlink to a directory"))
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return Err(refused("hardlink target does not exist inside the root"))
                    }
                }
                let (parent, name) = self.split_create(&comps)?;
                self.clear(&parent, name, false)?;
                rustix::fs::linkat(&tparent, tname, &parent, name, AtFlags::empty())
                    .map_err(|e| io_kind("cannot create hardlink", e))?;
                self.report.hardlinks += 1;
                self.created(&comps);
            }
            T::Char | T::Block | T::Fifo => {
                self.report.dropped_special += 1;
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            T::GNUSparse => return Err(refused("GNU sparse entries are not supported")),
            other => {
                return Err(refused(format!(
                    "unsupported entry type {:?}",
                    other.as_byte() as char
                )))
            }
        }
        Ok(())
    }

    fn meta(&mut self, header: &tar::Header) -> Result<Meta, UnpackErrorKind> {
        let old = header.as_old();
        let mode = numeric(header.mode().map(u64::from), &old.mode)
            .ok_or_else(|| refused("unreadable mode field"))?
            & 0o7777;
        let mode = mode as u32;
        if mode & 0o6000 != 0 {
            self.report.stripped_setid += 1;
        }
        let id = |v: Option<u64>, what: &str| -> Result<u32, UnpackErrorKind> {
            v.and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v != u32::MAX)
                .ok_or_else(|| refused(format!("invalid {what}")))
        };
        Ok(Meta {
            mode: mode & 0o1777,
            uid: id(numeric(header.uid(), &old.uid), "uid")?,
            gid: id(numeric(header.gid(), &old.gid), "gid")?,
            mtime: header.mtime().unwrap_or(0),
        })
    }

    fn apply_fd(&self, fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), UnpackErrorKind> {
        if self.chown {
            rustix::fs::fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(|e| io_kind("cannot chown", e))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| io_kind("cannot chmod", e))?;
        Ok(())
    }

    fn times_at(&self, parent: &OwnedFd, name: &[u8], mtime: u64) {
        let t = Timespec {
            tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
            tv_nsec: 0,
        };
        let _ = rustix::fs::utimensat(
            parent,
            name,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
            AtFlags::SYMLINK_NOFOLLOW,
        );
    }

    fn created(&mut self, comps: &[&[u8]]) {
        for i in 1..=comps.len() {
            self.this_layer.insert(join(&comps[..i]));
        }
    }

    /// Resolves (creating missing directories) the parent of `comps`; returns it and the last
    /// component.
    fn split_create<'c>(
        &mut self,
        comps: &[&'c [u8]],
    ) -> Result<(OwnedFd, &'c [u8]), UnpackErrorKind> {
        let Some((name, parent)) = comps.split_last() else {
            return Err(refused("empty path"));
        };
        Ok((self.resolve_dir(parent, true)?, name))
    }

    /// Opens the directory `comps` with in-root resolution (symlinks are resolved as if the
    /// staging dir were `/`), creating missing directories when `create`.
    fn resolve_dir(&mut self, comps: &[&[u8]], create: bool) -> Result<OwnedFd, UnpackErrorKind> {
        let root = self.root;
        let open = |comps: &[&[u8]]| {
            let path = if comps.is_empty() {
                b".".to_vec()
            } else {
                join(comps)
            };
            rustix::fs::openat2(
                root,
                path.as_slice(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            )
        };
        let describe = |e: Errno, comps: &[&[u8]]| -> UnpackErrorKind {
            let p = String::from_utf8_lossy(&join(comps)).into_owned();
            match e {
                Errno::NOTDIR => refused(format!("parent `{p}` is not a directory")),
                Errno::LOOP => refused(format!("symlink loop resolving `{p}`")),
                Errno::XDEV => refused(format!("`{p}` resolves across a mount")),
                Errno::NOENT => refused(format!(
                    "parent `{p}` does not exist inside the root (dangling symlink?)"
                )),
                Errno::NAMETOOLONG => refused(format!("path `{p}` is too long")),
                e => io_kind("cannot resolve parent directory", e),
            }
        };
        match open(comps) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) if create => {}
            Err(e) => return Err(describe(e, comps)),
        }
        // Create missing components one at a time, each inside an already-resolved directory.
        let mut cur = open(&[]).map_err(|e| describe(e, &[]))?;
        for i in 1..=comps.len() {
            cur = match open(&comps[..i]) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, comps[i - 1], Mode::from_raw_mode(0o755)) {
                        Ok(()) => {}
                        Err(Errno::EXIST) => return Err(describe(Errno::NOENT, &comps[..i])),
                        Err(e) => return Err(io_kind("cannot create parent directory", e)),
                    }
                    self.created(&comps[..i]);
                    open(&comps[..i]).map_err(|e| describe(e, &comps[..i]))?
                }
                Err(e) => return Err(describe(e, &comps[..i])),
            };
        }
        Ok(cur)
    }

    /// Makes room for a new entry `name` in `parent`. Returns true if an existing directory was
    /// kept (`keep_dir` and it is a directory); otherwise anything there is removed without
    /// following symlinks.
    fn clear(
        &self,
        parent: &OwnedFd,
        name: &[u8],
        keep_dir: bool,
    ) -> Result<bool, UnpackErrorKind> {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(io_kind("cannot stat existing entry", e)),
            Ok(st) => {
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    if keep_dir {
                        return Ok(true);
                    }
                    remove_all_at(parent.as_fd(), name, 0)
                        .map_err(|e| io_kind("cannot remove existing directory", e))?;
                } else {
                    rustix::fs::unlinkat(parent, name, AtFlags::empty())
                        .map_err(|e| io_kind("cannot remove existing entry", e))?;
                }
                Ok(false)
            }
        }
    }

    fn whiteout(&mut self, parent: &[&[u8]], name: &[u8]) -> Result<(), UnpackErrorKind> {
        let mut full = parent.to_vec();
        full.push(name);
        if self.this_layer.contains(&join(&full)) {
            return Ok(()); // whiteouts only hide lower layers
        }
        let dir = match self.resolve_dir(parent, false) {
            Ok(d) => d,
            Err(UnpackErrorKind::Refused(_)) => return Ok(()), // nothing there to hide
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => {}
            Err(e) => return Err(io_kind("cannot stat whiteout target", e)),
            Ok(st) => {
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    remove_all_at(dir.as_fd(), name, 0)
                        .map_err(|e| io_kind("cannot remove whiteout target", e))?;
                } else {
                    rustix::fs::unlinkat(&dir, name, AtFlags::empty())
                        .map_err(|e| io_kind("cannot remove whiteout target", e))?;
                }
            }
        }
        self.report.whiteouts += 1;
        Ok(())
    }

    fn opaque(&mut self, dir: &[&[u8]]) -> Result<(), UnpackErrorKind> {
        let pfd = self.resolve_dir(dir, true)?;
        let rd = rustix::fs::openat(
            &pfd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_kind("cannot open opaque directory", e))?;
        let prefix = join(dir);
        let mut doomed = Vec::new();
        for ent in rustix::fs::Dir::read_from(&rd).map_err(|e| io_kind("cannot list", e))? {
            let ent = ent.map_err(|e| io_kind("cannot list", e))?;
            let name = ent.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let mut key = prefix.clone();
            if !key.is_empty() {
                key.push(b'/');
            }
            key.extend_from_slice(name);
            if !self.this_layer.contains(&key) {
                doomed.push(name.to_vec());
            }
        }
        for name in doomed {
            remove_all_at(rd.as_fd(), &name, 0)
                .map_err(|e| io_kind("cannot clear opaque directory", e))?;
        }
        self.created(dir);
        self.report.whiteouts += 1;
        Ok(())
    }

    pub(super) fn finish_dirs(&mut self) {
        for (path, mtime) in std::mem::take(&mut self.dir_times) {
            let comps: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
            let Some((name, parent)) = comps.split_last() else {
                continue;
            };
            if let Ok(p) = self.resolve_dir(parent, false) {
                self.times_at(&p, name, mtime);
            }
        }
    }
}
