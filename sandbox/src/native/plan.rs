//! Everything the child needs, computed in the parent before `clone`.
//!
//! The child runs between `clone` and `execve` of a possibly multi-threaded parent, where any
//! allocation can deadlock on a malloc lock another thread held at the moment of the clone. So
//! every path, string and pointer array it will touch is built here, as `CString`s and
//! null-terminated pointer vectors, and the child only reads them.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use super::{RunError, RunSpec};

/// `/proc` entries hidden behind `/dev/null` (files) — runc's `maskedPaths`, plus
/// `sysrq-trigger` which runc only makes read-only.
pub(crate) const MASKED_PROC_FILES: &[&str] = &[
    "kcore",
    "keys",
    "key-users",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "sysrq-trigger",
    "kpagecount",
    "kpageflags",
    "kpagecgroup",
];
/// `/proc` directories hidden behind an empty read-only tmpfs.
pub(crate) const MASKED_PROC_DIRS: &[&str] = &["acpi", "asound", "scsi", "driver"];
/// `/proc` subtrees bound read-only — runc's `readonlyPaths`.
pub(crate) const READONLY_PROC: &[&str] = &["bus", "fs", "irq", "sys"];
/// Host device nodes bound into the sandbox's `/dev`.
pub(crate) const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// Conventional `/dev` symlinks (`name`, `target`).
pub(crate) const DEV_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// A bind mount, resolved to host source and pre-pivot target paths.
pub(crate) struct PlannedBind {
    pub source: CString,
    pub target: CString,
    pub read_only: bool,
    /// For a pinned source: (device, inode) the mounted target must show.
    pub expect: Option<(u64, u64)>,
}

/// Mount points the image lacks, provided without changing the verified rootfs (it is shared
/// by every run of its digest and must stay what unpack produced).
///
/// Inside the sandbox's own mount namespace, after the rootfs is bound read-only, init mounts a
/// tiny tmpfs (the *layer*) on the rootfs's `/tmp` (which the sandbox's own `/tmp` covers later),
/// creates in it every directory on the way to each missing target, and mounts a read-only,
/// upper-less overlay over the whole rootfs: `lowerdir=tmp:.` with init's working directory at
/// the rootfs, i.e. the layer above the image. Directories merge, so the image's own entries
/// all stay visible and the new ones appear beside them; nothing is ever written through the
/// overlay (it has no upper layer), so there is no copy-up, which in a user namespace would fail
/// for the image's files (their owners are not mapped). A merged directory shows the layer's
/// owner (the namespace root) with the image's mode; the overlay is read-only, nosuid, nodev
/// like the rootfs bind. Both mounts go with the old root at `pivot_root`'s detach, except the
/// overlay, which is the new root.
///
/// Chosen over a tmpfs on the nearest existing parent (which hides the image's entries there)
/// and over a writable overlay per parent (copy-up of an existing parent fails with EOVERFLOW
/// in a user namespace, and nested parents stack overlays past the kernel's depth limit).
/// Runs whose targets all exist mount neither.
pub(crate) struct MountPoints {
    /// tmpfs options of the layer (its root carries the rootfs root's mode).
    pub layer_data: CString,
    /// Directories to create in the layer, parent first, relative to the rootfs (`tmp/...`),
    /// with their modes.
    pub dirs: Vec<(CString, u32)>,
    /// `"overlay"`.
    pub overlay: CString,
    /// The overlay's options, relative to init's working directory (the rootfs).
    pub overlay_data: CString,
}

/// A null-terminated `char *[]` plus the `CString`s it points into.
pub(crate) struct CVec {
    _owned: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
}

// SAFETY: the raw pointers point into `_owned`, which lives as long as the CVec and is never
// mutated; sharing it across threads is as safe as sharing the CStrings themselves.
unsafe impl Sync for CVec {}
// SAFETY: as above; moving the Vec of CStrings does not move their heap buffers.
unsafe impl Send for CVec {}

impl CVec {
    pub(crate) fn new(items: Vec<CString>) -> Self {
        let mut ptrs: Vec<*const libc::c_char> = items.iter().map(|c| c.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        CVec {
            _owned: items,
            ptrs,
        }
    }
    pub(crate) fn as_ptr(&self) -> *const *const libc::c_char {
        self.ptrs.as_ptr()
    }
    /// Number of items (the terminating null not counted).
    pub(crate) fn len(&self) -> usize {
        self.ptrs.len() - 1
    }
}

/// The resource limits set with `prlimit` in the workload process.
#[derive(Clone, Copy)]
pub(crate) struct Rlimit {
    pub resource: libc::c_int,
    pub value: u64,
}

/// The child's file descriptors (numbers in the parent, inherited by `clone`).
#[derive(Clone, Copy, Default)]
pub(crate) struct ChildFds {
    pub sync_r: i32,
    /// The parent's end of the sync pipe: init closes its copy at once, so the pipe hangs up
    /// exactly when the parent (which holds it for the whole run) is gone.
    pub sync_w: i32,
    pub err_w: i32,
    pub status_w: i32,
    pub stdin_r: i32,
    pub stdout_w: i32,
    pub stderr_w: i32,
    /// Seccomp supervisor handoff (-1 when unsupervised): the workload sends its filter's
    /// listener to the parent over this socket (`SCM_RIGHTS`).
    pub seccomp_sock: i32,
    /// A pooled sandbox's bind socket (-1 otherwise): the workload reads the request's command
    /// from it once confined (see [`LateSlot`]).
    pub bind_r: i32,
}

/// The prepared plan. Read-only in the child.
pub(crate) struct Plan {
    pub hostname: Vec<u8>,
    pub rootfs: CString,
    pub proc_dir: CString,
    pub proc_masked_files: Vec<CString>,
    pub proc_masked_dirs: Vec<CString>,
    pub proc_readonly: Vec<CString>,
    pub max_userns: CString,
    pub dev_dir: CString,
    pub dev_host: Vec<CString>,
    pub dev_target: Vec<CString>,
    pub dev_links: Vec<(CString, CString)>,
    pub dev_data: CString,
    pub tmp_dir: CString,
    pub tmp_data: CString,
    pub binds: Vec<PlannedBind>,
    /// Mount points the image lacks (`None`: every target exists).
    pub mount_points: Option<MountPoints>,
    pub host_dev_null: CString,
    pub dot: CString,
    pub slash: CString,
    pub tmpfs: CString,
    pub proc_fs: CString,
    pub cwd: CString,
    pub exec_candidates: CVec,
    pub argv: CVec,
    pub envp: CVec,
    pub uid: u32,
    pub gid: u32,
    pub rlimits: Vec<Rlimit>,
    pub loopback: bool,
    pub fds: ChildFds,
    /// Sorted fds (>= 3) that survive the close-everything step.
    pub keep_fds: Vec<i32>,
    /// Every descriptor init needs before its stdio is set up (sorted, all >= 3): the run's
    /// pipes and sockets and `keep_fds`. Init closes all others first of all.
    pub inherited_fds: Vec<i32>,
    /// The stack the workload runs on until `execve` (see [`WorkloadStack`]).
    pub workload_stack: WorkloadStack,
    /// A pooled sandbox: where init puts the command it reads from the bind socket; `cwd`,
    /// `argv`, `envp` and `exec_candidates` above are then placeholders, never used.
    pub late: Option<LateSlot>,
}

/// What a pooled sandbox's workload writes on its bind socket once it is confined and about to
/// block for its command: its sandbox is then fully built.
pub(crate) const PARKED: u8 = b'P';

/// Memory for a pooled sandbox's late-bound command, mapped in the parent because init and the
/// workload may not allocate: a pointer area (`argv`, null, `envp`, null, candidates) then the strings. Pages are
/// only touched when a request arrives.
///
/// The bind frame, written by the service ([`late_frame`]): four little-endian `u32`s — the
/// strings' total length, argc, envc, the number of exec candidates — then the strings, each
/// NUL-terminated: the working directory, argv, env (`K=V`), the candidates. The other way, the
/// workload writes one [`PARKED`] byte just before it blocks for the frame.
pub(crate) struct LateSlot {
    map: AnonMap,
}

impl LateSlot {
    /// Most strings one request may bind (working directory, argv, env, candidates).
    pub(crate) const MAX_STRINGS: usize = 8192;
    /// Most bytes of those strings, NULs included (Linux's own `ARG_MAX` is 2 MiB at most).
    pub(crate) const MAX_BYTES: usize = 1 << 20;
    /// The pointer area: every string's pointer plus the two terminating nulls.
    pub(crate) const PTR_AREA: usize = (Self::MAX_STRINGS + 2) * std::mem::size_of::<usize>();

    fn map() -> Result<Self, RunError> {
        let map = AnonMap::new(
            Self::PTR_AREA + Self::MAX_BYTES,
            0,
            "mmap (late-bound command)",
        )?;
        Ok(LateSlot { map })
    }

    /// The pointer area (read and written inside the sandbox only).
    pub(crate) fn ptrs(&self) -> *mut *const libc::c_char {
        self.map.base.cast()
    }

    /// The string area (read and written inside the sandbox only).
    pub(crate) fn bytes(&self) -> *mut u8 {
        // SAFETY: PTR_AREA lies inside the mapping.
        unsafe { self.map.base.cast::<u8>().add(Self::PTR_AREA) }
    }
}

/// The bind frame for `spec`'s command (see [`LateSlot`]), checked as [`Plan::build`] checks
/// it; a command too large for the slot is [`RunError::InvalidSpec`] (the caller runs it cold).
pub(crate) fn late_frame(spec: &RunSpec) -> Result<Vec<u8>, RunError> {
    let argv = argv_strings(spec)?;
    let env = env_strings(spec)?;
    let cands = exec_candidates(spec)?;
    let cwd = cwd_string(spec)?;
    let strings = || std::iter::once(&cwd).chain(&argv).chain(&env).chain(&cands);
    let count = 1 + argv.len() + env.len() + cands.len();
    let bytes: usize = strings().map(|c| c.as_bytes_with_nul().len()).sum();
    if count > LateSlot::MAX_STRINGS || bytes > LateSlot::MAX_BYTES {
        return Err(RunError::InvalidSpec {
            field: "argv",
            reason: format!("{count} strings of {bytes} bytes: more than a pooled sandbox takes"),
        });
    }
    let mut frame = Vec::with_capacity(16 + bytes);
    for n in [bytes, argv.len(), env.len(), cands.len()] {
        frame.extend_from_slice(&(n as u32).to_le_bytes());
    }
    for c in strings() {
        frame.extend_from_slice(c.as_bytes_with_nul());
    }
    Ok(frame)
}

fn argv_strings(spec: &RunSpec) -> Result<Vec<CString>, RunError> {
    if spec.argv.is_empty() {
        return Err(RunError::InvalidSpec {
            field: "argv",
            reason: "empty command".into(),
        });
    }
    spec.argv
        .iter()
        .map(|a| cstr("argv", a.as_bytes()))
        .collect()
}

/// `K=V` for each variable, plus the default `PATH` when the spec sets none.
fn env_strings(spec: &RunSpec) -> Result<Vec<CString>, RunError> {
    let mut env: Vec<CString> = Vec::new();
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') {
            return Err(RunError::InvalidSpec {
                field: "env",
                reason: format!("invalid variable name {k:?}"),
            });
        }
        env.push(cstr("env", format!("{k}={v}").as_bytes())?);
    }
    if !spec.env.iter().any(|(k, _)| k == "PATH") {
        env.push(cstr(
            "env",
            format!("PATH={}", super::DEFAULT_PATH).as_bytes(),
        )?);
    }
    Ok(env)
}

fn cwd_string(spec: &RunSpec) -> Result<CString, RunError> {
    if !spec.cwd.is_absolute() {
        return Err(RunError::InvalidSpec {
            field: "cwd",
            reason: format!("{} is not absolute", spec.cwd.display()),
        });
    }
    cstr("cwd", spec.cwd.as_os_str().as_bytes())
}

/// Program lookup happens in the child after `pivot_root`: the paths to try, in order.
fn exec_candidates(spec: &RunSpec) -> Result<Vec<CString>, RunError> {
    let prog = spec.argv.first().map(String::as_bytes).unwrap_or_default();
    if prog.contains(&b'/') {
        return Ok(vec![cstr("argv[0]", prog)?]);
    }
    let path_var = spec
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(super::DEFAULT_PATH);
    let mut out = Vec::new();
    for dir in path_var.split(':').filter(|d| d.starts_with('/')) {
        let mut c = dir.as_bytes().to_vec();
        if !c.ends_with(b"/") {
            c.push(b'/');
        }
        c.extend_from_slice(prog);
        out.push(cstr("argv[0]", &c)?);
    }
    if out.is_empty() {
        return Err(RunError::InvalidSpec {
            field: "env.PATH",
            reason: "no absolute directory to look the command up in".into(),
        });
    }
    Ok(out)
}

/// The stack init's workload child runs on between its `clone(CLONE_VM | CLONE_VFORK)` and
/// `execve`. Sharing init's memory instead of copying it spares the kernel a copy of the whole
/// (parent-sized) address space, the copy-on-write faults after it and its teardown at `execve`
/// — the largest part of starting the workload. It is mapped here, in the parent, because the
/// child may not allocate; init inherits it with the rest of the address space. The lowest page
/// is `PROT_NONE`, so an overflow faults instead of writing into init's memory.
pub(crate) struct WorkloadStack {
    map: AnonMap,
}

impl WorkloadStack {
    /// Usable stack size: the final step, path lookup and `execve` need a few KiB; this is
    /// what glibc's `posix_spawn` would use for a much smaller job, times a safety margin.
    const SIZE: usize = 256 * 1024;
    const GUARD: usize = 4096;

    fn map() -> Result<Self, RunError> {
        let map = AnonMap::new(
            Self::SIZE + Self::GUARD,
            libc::MAP_STACK,
            "mmap (workload stack)",
        )?;
        // SAFETY: the first page lies inside the mapping just created.
        if unsafe { libc::mprotect(map.base, Self::GUARD, libc::PROT_NONE) } != 0 {
            return Err(super::last("mprotect (workload stack guard)"));
        }
        Ok(WorkloadStack { map })
    }

    /// The initial stack pointer: the top of the mapping (x86_64 and aarch64 stacks grow down;
    /// the top of a page-aligned mapping is 16-byte aligned as both ABIs require).
    pub(crate) fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, which is what clone(2) expects.
        unsafe { self.map.base.cast::<u8>().add(self.map.len).cast() }
    }
}

/// Private anonymous memory the parent maps for the child, which may not allocate: owned by
/// this value, unmapped on drop.
struct AnonMap {
    base: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone; the parent never touches its contents (only
// the child, in its own copy of the address space), so moving or sharing the handle is sound.
unsafe impl Send for AnonMap {}
// SAFETY: as above; `&AnonMap` only reads the two fields.
unsafe impl Sync for AnonMap {}

impl AnonMap {
    /// `len` bytes, read-write, with `extra` mmap flags; `what` names it in the error.
    fn new(len: usize, extra: libc::c_int, what: &'static str) -> Result<Self, RunError> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(super::last(what));
        }
        Ok(AnonMap { base, len })
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping `new` created, which nothing else refers to.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

pub(crate) fn cstr(field: &'static str, bytes: &[u8]) -> Result<CString, RunError> {
    CString::new(bytes).map_err(|_| RunError::InvalidSpec {
        field,
        reason: format!("contains a NUL byte: {:?}", String::from_utf8_lossy(bytes)),
    })
}

fn path_c(field: &'static str, p: &Path) -> Result<CString, RunError> {
    cstr(field, p.as_os_str().as_bytes())
}

/// `target` (absolute, inside the sandbox) as a path under `rootfs`, refusing `..`.
fn under(rootfs: &Path, target: &Path, field: &'static str) -> Result<PathBuf, RunError> {
    if !target.is_absolute() {
        return Err(RunError::InvalidSpec {
            field,
            reason: format!("{} is not absolute", target.display()),
        });
    }
    let mut out = rootfs.to_path_buf();
    for c in target.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(RunError::InvalidSpec {
                    field,
                    reason: format!("{} contains '..'", target.display()),
                })
            }
        }
    }
    Ok(out)
}

/// A mount point inside the rootfs must exist, and no component may be a symlink: the child
/// mounts before `pivot_root`, where a symlink would resolve against the host's root.
fn check_mount_point(rootfs: &Path, inside: &Path) -> Result<(), RunError> {
    match existing_prefix(rootfs, inside)? {
        None => Ok(()),
        Some(missing) => Err(RunError::MountPointMissing {
            path: rootfs.join(missing),
        }),
    }
}

/// Walks `inside` (relative to `rootfs`) component by component without following symlinks.
/// Returns `None` when the whole path exists, else the first missing prefix. Every existing
/// component must not be a symlink (the child mounts before `pivot_root`, where a symlink would
/// resolve against the host's root), and the last existing one before a missing component
/// must be a directory.
fn existing_prefix(rootfs: &Path, inside: &Path) -> Result<Option<PathBuf>, RunError> {
    let mut cur = rootfs.to_path_buf();
    let mut rel = PathBuf::new();
    for c in inside.components() {
        if let Component::Normal(n) = c {
            cur.push(n);
            rel.push(n);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(RunError::MountPointSymlink { path: cur })
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let parent = cur.parent().unwrap_or(rootfs);
                    if !parent.is_dir() {
                        return Err(RunError::InvalidSpec {
                            field: "mounts.target",
                            reason: format!("{} is not a directory in the image", parent.display()),
                        });
                    }
                    return Ok(Some(rel));
                }
                Err(_) => return Err(RunError::MountPointMissing { path: cur }),
            }
        }
    }
    Ok(None)
}

/// Mount points the image lacks, provided without writing to the rootfs (see
/// [`MountPoints`]): every directory on the way to each missing target, parent first, with the
/// mode it shows inside the sandbox (the image's own mode for directories the image has, 0755
/// for new ones).
fn missing_mount_points(
    rootfs: &Path,
    targets: &[PathBuf],
) -> Result<Option<MountPoints>, RunError> {
    let mut dirs: std::collections::BTreeMap<PathBuf, u32> = std::collections::BTreeMap::new();
    for target in targets {
        let inside = target.strip_prefix("/").unwrap_or(target);
        let Some(missing) = existing_prefix(rootfs, inside)? else {
            continue;
        };
        // The filesystems the sandbox mounts itself would hide a directory made here.
        if let Some(Component::Normal(top)) = inside.components().next() {
            if ["proc", "dev", "tmp"].iter().any(|d| top == *d) {
                return Err(RunError::InvalidSpec {
                    field: "mounts.target",
                    reason: format!(
                        "{}: missing from the image under /{}, which the sandbox mounts itself",
                        target.display(),
                        top.to_string_lossy()
                    ),
                });
            }
        }
        let mut rel = PathBuf::new();
        for c in inside.components() {
            let Component::Normal(n) = c else { continue };
            rel.push(n);
            let mode = if rel.starts_with(&missing) {
                0o755
            } else {
                let m = std::fs::symlink_metadata(rootfs.join(&rel)).map_err(|_| {
                    RunError::MountPointMissing {
                        path: rootfs.join(&rel),
                    }
                })?;
                m.permissions().mode() & 0o7777
            };
            dirs.entry(rel.clone()).or_insert(mode);
        }
    }
    if dirs.is_empty() {
        return Ok(None);
    }
    let root_mode = std::fs::metadata(rootfs)
        .map_err(|_| RunError::MountPointMissing {
            path: rootfs.to_path_buf(),
        })?
        .permissions()
        .mode()
        & 0o7777;
    // Directories take no data pages on tmpfs, only inodes: one per directory and the root.
    let layer_data = format!("mode={root_mode:o},size=4k,nr_inodes={}", dirs.len() + 2);
    let dirs = dirs
        .into_iter()
        .map(|(rel, mode)| {
            let mut p = b"tmp/".to_vec();
            p.extend_from_slice(rel.as_os_str().as_bytes());
            Ok((cstr("mounts.target", &p)?, mode))
        })
        .collect::<Result<_, RunError>>()?;
    Ok(Some(MountPoints {
        layer_data: cstr("mounts.target", layer_data.as_bytes())?,
        dirs,
        overlay: cstr("", b"overlay")?,
        overlay_data: cstr("", b"lowerdir=tmp:.")?,
    }))
}

/// The child switches to unprivileged host ids before touching the rootfs, so the rootfs and
/// every directory above it must be searchable by "other".
fn check_searchable(p: &Path) -> Result<(), RunError> {
    let mut cur = Some(p);
    while let Some(d) = cur {
        let m = std::fs::metadata(d).map_err(|_| RunError::MountPointMissing {
            path: d.to_path_buf(),
        })?;
        if m.permissions().mode() & 0o001 == 0 {
            return Err(RunError::NotSearchable {
                path: d.to_path_buf(),
            });
        }
        cur = d.parent();
    }
    Ok(())
}

impl Plan {
    /// Validate `spec` and build every string the child will use; with `late`, for a pooled
    /// sandbox whose command is bound when a request arrives (the spec's own command is then a
    /// placeholder, see [`LateSlot`]).
    pub(crate) fn build(spec: &RunSpec, final_keep: &[i32], late: bool) -> Result<Plan, RunError> {
        if spec.argv.is_empty() {
            return Err(RunError::InvalidSpec {
                field: "argv",
                reason: "empty command".into(),
            });
        }
        let rootfs =
            spec.rootfs()
                .path()
                .canonicalize()
                .map_err(|_| RunError::MountPointMissing {
                    path: spec.rootfs().path().to_path_buf(),
                })?;
        if !rootfs.is_dir() {
            return Err(RunError::InvalidSpec {
                field: "rootfs",
                reason: format!("{} is not a directory", rootfs.display()),
            });
        }
        check_searchable(&rootfs)?;
        for d in ["/proc", "/dev", "/tmp"] {
            check_mount_point(&rootfs, Path::new(d))?;
        }
        let mut binds = Vec::new();
        for b in &spec.mounts {
            under(&rootfs, &b.target, "mounts.target")?;
        }
        let targets: Vec<PathBuf> = spec.mounts.iter().map(|b| b.target.clone()).collect();
        let mount_points = missing_mount_points(&rootfs, &targets)?;
        // A pooled sandbox only provides its mount points: the request's mounts are moved in
        // when it is taken (see `late_mounts`).
        let now = if late { &[][..] } else { &spec.mounts[..] };
        for (i, b) in now.iter().enumerate() {
            let target = under(&rootfs, &b.target, "mounts.target")?;
            let source = b.source.canonicalize().map_err(|_| RunError::InvalidSpec {
                field: "mounts.source",
                reason: format!("mount {i}: {} does not exist", b.source.display()),
            })?;
            check_searchable(source.parent().unwrap_or(Path::new("/")))?;
            // A pinned source: init checks that the mount shows the file that was opened.
            let expect = match &b.pinned {
                Some(fd) => {
                    let st = rustix::fs::fstat(fd.as_ref()).map_err(|e| RunError::InvalidSpec {
                        field: "mounts.source",
                        reason: format!("mount {i}: {}: {e}", b.source.display()),
                    })?;
                    Some((st.st_dev, st.st_ino))
                }
                None => None,
            };
            binds.push(PlannedBind {
                expect,
                source: path_c("mounts.source", &source)?,
                target: path_c("mounts.target", &target)?,
                read_only: b.read_only,
            });
        }
        let proc_dir = rootfs.join("proc");
        let dev_dir = rootfs.join("dev");
        let tmp_dir = rootfs.join("tmp");
        let name_c = |dir: &Path, n: &str| path_c("rootfs", &dir.join(n));
        let proc_masked_files = MASKED_PROC_FILES
            .iter()
            .map(|n| name_c(&proc_dir, n))
            .collect::<Result<_, _>>()?;
        let proc_masked_dirs = MASKED_PROC_DIRS
            .iter()
            .map(|n| name_c(&proc_dir, n))
            .collect::<Result<_, _>>()?;
        let proc_readonly = READONLY_PROC
            .iter()
            .map(|n| name_c(&proc_dir, n))
            .collect::<Result<_, _>>()?;
        let dev_host = DEV_NODES
            .iter()
            .map(|n| name_c(Path::new("/dev"), n))
            .collect::<Result<_, _>>()?;
        let dev_target = DEV_NODES
            .iter()
            .map(|n| name_c(&dev_dir, n))
            .collect::<Result<_, _>>()?;
        let dev_links = DEV_LINKS
            .iter()
            .map(|(n, t)| Ok((name_c(&dev_dir, n)?, cstr("dev", t.as_bytes())?)))
            .collect::<Result<_, RunError>>()?;

        let exec_candidates = CVec::new(exec_candidates(spec)?);
        let argv = CVec::new(argv_strings(spec)?);
        let envp = CVec::new(env_strings(spec)?);
        let cwd = cwd_string(spec)?;
        if spec.hostname.len() > 64 || spec.hostname.is_empty() {
            return Err(RunError::InvalidSpec {
                field: "hostname",
                reason: "must be 1..=64 bytes".into(),
            });
        }
        let mut keep_fds: Vec<i32> = final_keep.to_vec();
        keep_fds.sort_unstable();
        keep_fds.dedup();
        if keep_fds.iter().any(|&fd| fd < 3) {
            return Err(RunError::InvalidSpec {
                field: "final_step.keep_fds",
                reason: "stdio fds cannot be kept".into(),
            });
        }
        // Room for the two pipe fds, inserted after they exist; no reallocation in the child.
        keep_fds.reserve(6);
        let l = &spec.limits;
        Ok(Plan {
            workload_stack: WorkloadStack::map()?,
            hostname: spec.hostname.as_bytes().to_vec(),
            rootfs: path_c("rootfs", &rootfs)?,
            proc_dir: path_c("rootfs", &proc_dir)?,
            proc_masked_files,
            proc_masked_dirs,
            proc_readonly,
            max_userns: path_c("rootfs", &proc_dir.join("sys/user/max_user_namespaces"))?,
            dev_dir: path_c("rootfs", &dev_dir)?,
            dev_host,
            dev_target,
            dev_links,
            dev_data: cstr("dev", b"mode=0755,size=64k,nr_inodes=64")?,
            tmp_dir: path_c("rootfs", &tmp_dir)?,
            tmp_data: cstr(
                "tmpfs",
                format!("mode=1777,size={}", spec.tmpfs_size).as_bytes(),
            )?,
            binds,
            mount_points,
            host_dev_null: cstr("dev", b"/dev/null")?,
            dot: cstr("", b".")?,
            slash: cstr("", b"/")?,
            tmpfs: cstr("", b"tmpfs")?,
            proc_fs: cstr("", b"proc")?,
            cwd,
            exec_candidates,
            argv,
            envp,
            uid: spec.uid,
            gid: spec.gid,
            rlimits: vec![
                Rlimit {
                    resource: libc::RLIMIT_NOFILE as libc::c_int,
                    value: within_host_hard_limit(libc::RLIMIT_NOFILE, l.nofile),
                },
                Rlimit {
                    // Per host uid; our uids are per-sandbox leases, so this is per sandbox.
                    resource: libc::RLIMIT_NPROC as libc::c_int,
                    value: within_host_hard_limit(libc::RLIMIT_NPROC, u64::from(l.pids)),
                },
                Rlimit {
                    resource: libc::RLIMIT_CORE as libc::c_int,
                    value: 0,
                },
            ],
            loopback: spec.loopback,
            fds: ChildFds::default(),
            keep_fds,
            inherited_fds: Vec::new(),
            late: if late { Some(LateSlot::map()?) } else { None },
        })
    }

    /// Record the pipe fds and add the ones the init keeps to `keep_fds` (sorted).
    pub(crate) fn set_fds(&mut self, fds: ChildFds) {
        self.fds = fds;
        let mut inherited: Vec<i32> = self.keep_fds.clone();
        inherited.extend([
            fds.sync_r,
            fds.sync_w,
            fds.err_w,
            fds.status_w,
            fds.stdin_r,
            fds.stdout_w,
            fds.stderr_w,
            fds.seccomp_sock,
            fds.bind_r,
        ]);
        inherited.retain(|&fd| fd >= 3);
        inherited.sort_unstable();
        inherited.dedup();
        self.inherited_fds = inherited;
        self.keep_fds.push(fds.err_w);
        self.keep_fds.push(fds.status_w);
        if fds.seccomp_sock >= 0 {
            self.keep_fds.push(fds.seccomp_sock);
        }
        if fds.bind_r >= 0 {
            self.keep_fds.push(fds.bind_r);
        }
        self.keep_fds.sort_unstable();
    }
}

/// `wanted`, lowered to this process's hard limit for `resource`.
///
/// Rlimits are not namespaced: raising a hard limit needs `CAP_SYS_RESOURCE` in the *initial*
/// user namespace, which the sandbox's namespace root never has, so asking the kernel for more
/// than the hard limit the workload inherits fails with `EPERM` at setup (the `default` tier's
/// 65536 files on a host whose hard `RLIMIT_NOFILE` is lower). Lowering it only tightens the
/// tier's limit, never loosens it, and is decided here, in the parent, before anything starts.
fn within_host_hard_limit(resource: libc::__rlimit_resource_t, wanted: u64) -> u64 {
    let mut cur = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit64 writes one rlimit64 into a stack struct we own.
    let r = unsafe { libc::getrlimit64(resource, &mut cur) };
    if r != 0 || cur.rlim_max == libc::RLIM64_INFINITY {
        return wanted;
    }
    wanted.min(cur.rlim_max)
}
