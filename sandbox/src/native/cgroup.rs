//! Per-run cgroups on cgroup v1, v2, or a hybrid of both.
//!
//! Hosts differ: pure v2 (one unified tree, controllers enabled through `cgroup.subtree_control`),
//! pure v1 (one mount per controller), or hybrid (v1 controllers plus a controller-less v2 tree,
//! as on our CI machines). A controller lives in exactly one hierarchy, so detection is per
//! controller: `memory`, `pids` and `cpu` each go to the v1 mount that carries them, or else to
//! the unified tree if it offers them. A run fails closed when one of them is available nowhere.
//!
//! Each run gets `<own cgroup>/perry-run-<pid>-<seq>` in every hierarchy it uses, nested under
//! the cgroup the calling process already lives in (so a service's own limits still bound its
//! sandboxes) and removed when the run ends. When a unified tree exists it also gets a leaf there
//! even if it has no controllers: v2 gives `cgroup.kill`, which kills a whole tree atomically.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::RunError;

/// Which hierarchy serves a controller.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Where {
    /// A v1 hierarchy: the directory of the calling process's cgroup in it.
    V1(PathBuf),
    /// The unified hierarchy.
    V2,
}

/// The host's cgroup layout as seen by this process (detected once).
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    memory: Option<Where>,
    pids: Option<Where>,
    cpu: Option<Where>,
    /// The calling process's cgroup directory in the unified hierarchy.
    unified: Option<PathBuf>,
}

static LAYOUT: OnceLock<Result<Layout, String>> = OnceLock::new();

fn layout() -> Result<&'static Layout, RunError> {
    LAYOUT
        .get_or_init(|| detect().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| RunError::Cgroup {
            path: PathBuf::from("/proc/self/mountinfo"),
            op: "detect cgroup hierarchies",
            source: io::Error::other(e.clone()),
        })
}

/// Parse `/proc/self/mountinfo` and `/proc/self/cgroup`.
fn detect() -> io::Result<Layout> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let own = fs::read_to_string("/proc/self/cgroup")?;
    // hierarchy membership: v1 lines are "id:ctrl1,ctrl2:/path", the v2 line is "0::/path".
    let own_path = |pred: &dyn Fn(&str) -> bool| -> Option<String> {
        own.lines().find_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            pred(ctrls).then(|| path.to_string())
        })
    };
    let mut v1: Vec<(Vec<String>, PathBuf)> = Vec::new();
    let mut v2_mount: Option<PathBuf> = None;
    for line in mountinfo.lines() {
        // fields: id parent maj:min root mountpoint opts [optional...] - fstype source superopts
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mountpoint = left.split(' ').nth(4).unwrap_or("");
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or("");
        let _src = r.next();
        let superopts = r.next().unwrap_or("");
        match fstype {
            "cgroup" => {
                let ctrls: Vec<String> = superopts
                    .split(',')
                    .filter(|o| matches!(*o, "memory" | "pids" | "cpu"))
                    .map(str::to_string)
                    .collect();
                if !ctrls.is_empty() {
                    v1.push((ctrls, PathBuf::from(unescape(mountpoint))));
                }
            }
            "cgroup2" if v2_mount.is_none() => v2_mount = Some(PathBuf::from(unescape(mountpoint))),
            _ => {}
        }
    }
    let unified = v2_mount.and_then(|m| {
        let p = own_path(&|c: &str| c.is_empty())?;
        Some(join_cgroup(&m, &p))
    });
    let v2_has = |ctrl: &str| -> bool {
        let Some(dir) = &unified else { return false };
        fs::read_to_string(dir.join("cgroup.controllers"))
            .map(|s| s.split_whitespace().any(|c| c == ctrl))
            .unwrap_or(false)
    };
    let find = |ctrl: &str| -> Option<Where> {
        if let Some((_, mnt)) = v1.iter().find(|(c, _)| c.iter().any(|x| x == ctrl)) {
            let p = own_path(&|c: &str| c.split(',').any(|x| x == ctrl))?;
            return Some(Where::V1(join_cgroup(mnt, &p)));
        }
        v2_has(ctrl).then_some(Where::V2)
    };
    Ok(Layout {
        memory: find("memory"),
        pids: find("pids"),
        cpu: find("cpu"),
        unified,
    })
}

fn me_unified(l: &Layout) -> &Path {
    // Where::V2 is only ever chosen when the unified directory exists.
    l.unified.as_deref().unwrap_or(Path::new("/sys/fs/cgroup"))
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn join_cgroup(mount: &Path, cg: &str) -> PathBuf {
    let rel = cg.trim_start_matches('/');
    if rel.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rel)
    }
}

/// Limits applied to the run's cgroups.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CgLimits {
    pub memory: u64,
    pub pids: u32,
    pub cpus: f64,
}

/// The cgroups of one run; removed on drop.
#[derive(Debug)]
pub(crate) struct RunCgroups {
    /// Every directory created, in creation order.
    dirs: Vec<PathBuf>,
    memory: (PathBuf, bool),
    unified_leaf: Option<PathBuf>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

const CPU_PERIOD_US: u64 = 100_000;

fn cg_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> RunError + 'a {
    move |source| RunError::Cgroup {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn write(path: &Path, value: &str, op: &'static str) -> Result<(), RunError> {
    fs::write(path, value).map_err(cg_err(path, op))
}

impl RunCgroups {
    /// Create the run's cgroups and apply `limits`. Fails closed when a controller is missing.
    pub(crate) fn create(limits: CgLimits) -> Result<Self, RunError> {
        let l = layout()?;
        let name = format!(
            "perry-run-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut me = RunCgroups {
            dirs: Vec::new(),
            memory: (PathBuf::new(), false),
            unified_leaf: None,
        };
        let need = |w: &Option<Where>, ctrl: &'static str| {
            w.clone()
                .ok_or(RunError::ControllerMissing { controller: ctrl })
        };
        let memory = need(&l.memory, "memory")?;
        let pids = need(&l.pids, "pids")?;
        let cpu = need(&l.cpu, "cpu")?;
        // The unified leaf first: it is where v2 controllers are configured.
        if let Some(parent) = &l.unified {
            let wanted: Vec<&str> = [("memory", &memory), ("pids", &pids), ("cpu", &cpu)]
                .iter()
                .filter(|(_, w)| **w == Where::V2)
                .map(|(c, _)| *c)
                .collect();
            if !wanted.is_empty() {
                // Controllers must be enabled in the parent for the child to get their files.
                let sc = parent.join("cgroup.subtree_control");
                let current = fs::read_to_string(&sc).map_err(cg_err(&sc, "read"))?;
                let missing: Vec<String> = wanted
                    .iter()
                    .filter(|c| !current.split_whitespace().any(|x| x == **c))
                    .map(|c| format!("+{c}"))
                    .collect();
                if !missing.is_empty() {
                    write(&sc, &missing.join(" "), "enable controllers")?;
                }
            }
            let leaf = parent.join(&name);
            fs::create_dir(&leaf).map_err(cg_err(&leaf, "mkdir"))?;
            me.dirs.push(leaf.clone());
            me.unified_leaf = Some(leaf);
        }
        let dir_of = |w: &Where| -> (PathBuf, bool) {
            match w {
                Where::V1(p) => (p.join(&name), false),
                Where::V2 => (me_unified(l).join(&name), true),
            }
        };
        let (mem_dir, mem_v2) = dir_of(&memory);
        let (pids_dir, _) = dir_of(&pids);
        let (cpu_dir, cpu_v2) = dir_of(&cpu);
        for d in [&mem_dir, &pids_dir, &cpu_dir] {
            if !me.dirs.contains(d) {
                fs::create_dir(d).map_err(cg_err(d, "mkdir"))?;
                me.dirs.push(d.clone());
            }
        }
        // memory
        if mem_v2 {
            write(
                &mem_dir.join("memory.max"),
                &limits.memory.to_string(),
                "memory.max",
            )?;
            let swap = mem_dir.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0", "memory.swap.max")?;
            }
        } else {
            write(
                &mem_dir.join("memory.limit_in_bytes"),
                &limits.memory.to_string(),
                "memory.limit_in_bytes",
            )?;
            // Without this a workload could spill past the limit into swap.
            let memsw = mem_dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &limits.memory.to_string(), "memsw.limit_in_bytes")?;
            }
        }
        me.memory = (mem_dir, mem_v2);
        // pids: the same file name in both versions.
        write(
            &pids_dir.join("pids.max"),
            &limits.pids.to_string(),
            "pids.max",
        )?;
        // cpu
        let quota = ((limits.cpus * CPU_PERIOD_US as f64) as u64).max(1000);
        if cpu_v2 {
            write(
                &cpu_dir.join("cpu.max"),
                &format!("{quota} {CPU_PERIOD_US}"),
                "cpu.max",
            )?;
        } else {
            write(
                &cpu_dir.join("cpu.cfs_period_us"),
                &CPU_PERIOD_US.to_string(),
                "cpu.cfs_period_us",
            )?;
            write(
                &cpu_dir.join("cpu.cfs_quota_us"),
                &quota.to_string(),
                "cpu.cfs_quota_us",
            )?;
        }
        Ok(me)
    }

    /// The run's leaf in the unified hierarchy, opened for `clone3(CLONE_INTO_CGROUP)`: the
    /// child is born there, which spares one migration (every one of them, on a pure v2 host).
    /// `None` without a unified hierarchy.
    pub(crate) fn unified_leaf_fd(&self) -> Result<Option<std::os::fd::OwnedFd>, RunError> {
        let Some(leaf) = &self.unified_leaf else {
            return Ok(None);
        };
        rustix::fs::open(
            leaf,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map(Some)
        .map_err(|e| cg_err(leaf, "open")(e.into()))
    }

    /// Move `pid` (and so everything it will fork) into every cgroup of the run; with
    /// `born_in_unified`, the unified leaf is skipped (the child was cloned into it).
    pub(crate) fn attach(&self, pid: i32, born_in_unified: bool) -> Result<(), RunError> {
        let s = pid.to_string();
        for d in &self.dirs {
            if born_in_unified && self.unified_leaf.as_ref() == Some(d) {
                continue;
            }
            LAST_MIGRATION_MS.store(monotonic_ms(), Ordering::Relaxed);
            write(&d.join("cgroup.procs"), &s, "attach")?;
        }
        Ok(())
    }

    /// Peak memory use of the run (bytes), if the kernel reports it.
    pub(crate) fn memory_peak(&self) -> Option<u64> {
        let (dir, v2) = &self.memory;
        let f = if *v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        fs::read_to_string(dir.join(f)).ok()?.trim().parse().ok()
    }

    /// True when the kernel OOM-killed something in the run's memory cgroup.
    pub(crate) fn oom_killed(&self) -> bool {
        let (dir, v2) = &self.memory;
        let f = if *v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        fs::read_to_string(dir.join(f))
            .map(|s| {
                s.lines().any(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
            .unwrap_or(false)
    }

    /// Kill every process still in the run's cgroups (belt and braces after the pid namespace
    /// init is gone: v2 `cgroup.kill`, else signal each listed pid).
    pub(crate) fn kill_all(&self) {
        if let Some(leaf) = &self.unified_leaf {
            let k = leaf.join("cgroup.kill");
            if k.exists() && fs::write(&k, "1").is_ok() {
                return;
            }
        }
        for d in &self.dirs {
            if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    // SAFETY: kill(2) with a pid read from the run's own cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }

    /// Remove the run's cgroups, killing stragglers; retried briefly because a cgroup stays busy
    /// until its last task has been fully released.
    pub(crate) fn remove(&mut self) -> Result<(), RunError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(d) = self.dirs.last().cloned() {
            match fs::remove_dir(&d) {
                Ok(()) => {
                    self.dirs.pop();
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.dirs.pop();
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    self.kill_all();
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(cg_err(&d, "rmdir")(e)),
            }
        }
        Ok(())
    }
}

/// When the last cgroup migration by this process happened (ms on a monotonic clock).
static LAST_MIGRATION_MS: AtomicU64 = AtomicU64::new(0);

/// How long after a migration the next one is assumed to take the fast path.
const WARM_WINDOW_MS: u64 = 5;

fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    // +WARM_WINDOW_MS so that the very first call never counts as "recent".
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + WARM_WINDOW_MS
}

/// Starts, on a background thread, the kernel work that makes the first cgroup migration of a
/// process slow, so that it overlaps whatever the caller does next (verification, pulling).
///
/// Moving a task between cgroups takes the kernel's global `cgroup_threadgroup_rwsem` for
/// writing, and the first writer after a quiet period waits for a full RCU grace period
/// (measured here: 5–25 ms, most of a one-shot `perry-sandbox run`). Writers that follow within
/// about one grace period take the fast path. The warm-up performs a migration that changes
/// nothing — this process into the v1 cgroup it is already in — so the attach of the sandbox
/// that follows a few milliseconds later is fast. Best effort: errors are ignored, and on hosts
/// without a v1 controller hierarchy it does nothing.
pub fn warm_up_migration() {
    // A migration in the last few milliseconds means the fast path is open already (a busy
    // service); skip the extra write.
    let now = monotonic_ms();
    let last = LAST_MIGRATION_MS.swap(now, Ordering::Relaxed);
    if now.saturating_sub(last) < WARM_WINDOW_MS {
        return;
    }
    // The layout is detected on the thread too (parsing mountinfo is most of the cost of a
    // first run's cgroup set-up); a run that needs it meanwhile waits for the same `OnceLock`.
    let _ = std::thread::Builder::new()
        .name("perry-cgroup-warmup".into())
        .spawn(|| {
            let Ok(l) = layout() else {
                return;
            };
            let dir = [&l.memory, &l.pids, &l.cpu]
                .into_iter()
                .find_map(|w| match w {
                    Some(Where::V1(p)) => Some(p),
                    _ => None,
                });
            if let Some(dir) = dir {
                let _ = fs::write(dir.join("cgroup.procs"), std::process::id().to_string());
            }
        });
}

/// The directories run cgroups are created under: this process's cgroup in the unified
/// hierarchy and in each v1 hierarchy serving memory, pids or cpu.
fn run_parents(l: &Layout) -> Vec<PathBuf> {
    let mut parents: Vec<PathBuf> = Vec::new();
    if let Some(u) = &l.unified {
        parents.push(u.clone());
    }
    for w in [&l.memory, &l.pids, &l.cpu].into_iter().flatten() {
        if let Where::V1(p) = w {
            if !parents.contains(p) {
                parents.push(p.clone());
            }
        }
    }
    parents
}

/// Every run cgroup (`perry-run-<pid>-<seq>`) under this process's cgroups, in every hierarchy
/// the runner uses, with the supervisor pid its name carries: what a leak check, the restart
/// sweep or an operator's inventory looks at. (Children of this process create theirs in the
/// same places, so a test or a supervisor of `serve` sees the service's too.)
pub fn run_cgroups() -> Vec<(u32, PathBuf)> {
    let Ok(l) = layout() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for parent in run_parents(l) {
        let Ok(entries) = fs::read_dir(&parent) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix("perry-run-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                found.push((pid, e.path()));
            }
        }
    }
    found.sort();
    found
}

/// Removes the run cgroups (`perry-run-<pid>-<seq>`) of supervisors that no longer exist — what a
/// service killed with SIGKILL leaves behind (its sandboxes died with it: init has a parent-death
/// signal; any straggler is killed here first). Cgroups of live processes are never touched.
/// Returns the directories removed.
pub fn sweep_stale() -> Vec<PathBuf> {
    let Ok(l) = layout() else {
        return Vec::new();
    };
    let parents = run_parents(l);
    let me = std::process::id();
    let mut stale: Vec<String> = Vec::new();
    for (pid, dir) in run_cgroups() {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if pid != me && !Path::new(&format!("/proc/{pid}")).exists() && !stale.contains(&name) {
            stale.push(name);
        }
    }
    let mut removed = Vec::new();
    for name in stale {
        let dirs: Vec<PathBuf> = parents
            .iter()
            .map(|p| p.join(&name))
            .filter(|d| d.is_dir())
            .collect();
        let mut run = RunCgroups {
            unified_leaf: l
                .unified
                .as_ref()
                .map(|u| u.join(&name))
                .filter(|d| d.is_dir()),
            memory: (PathBuf::new(), false),
            dirs: dirs.clone(),
        };
        if run.remove().is_ok() {
            removed.extend(dirs);
        }
    }
    removed
}

impl Drop for RunCgroups {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}
