//! Empty network namespaces made ahead of time, off the critical path of a run.
//!
//! Creating a network namespace is the single most expensive part of a sandbox start: the kernel
//! registers the per-namespace sysctl tables and a loopback device (~0.6 ms here, a quarter of a
//! bare run). That work does not depend on the run, so [`prepare_network_namespaces`] starts a
//! background thread that keeps a few namespaces ready, and [`run`](super::run) enters one
//! instead of passing `CLONE_NEWNET`.
//!
//! # What a prepared namespace is, and why it is as strong as `CLONE_NEWNET`
//!
//! * It is brand new and used by exactly one sandbox: [`take`] removes it from the pool and the
//!   pool's fd is closed as soon as the sandbox has been cloned into it, so it dies with the
//!   sandbox. No two runs ever share one.
//! * It holds only a loopback device that is down, like the one `CLONE_NEWNET` creates. Nothing
//!   configures it: the refill thread creates it, opens it and leaves it.
//! * It is owned by the host's user namespace instead of the sandbox's, so even root inside the
//!   sandbox holds no capability over it: it cannot bring `lo` up, add interfaces or change its
//!   sysctls. Runs whose tier grants loopback therefore still get their own `CLONE_NEWNET` (their
//!   init brings `lo` up with the capabilities it has there).
//!
//! # How a run enters it
//!
//! A network namespace belongs to a task (thread), and `clone` copies the calling thread's. The
//! thread calling [`run`](super::run) enters the prepared namespace with `setns` right before the
//! clone and returns to the namespace it came from right after ([`Entered`]), so nothing else in
//! the process ever runs inside it. `setns` into a network namespace is allowed in a
//! multi-threaded process and needs `CAP_SYS_ADMIN` over it — root, which the runner needs anyway.
//! Without that capability the refill thread's first `unshare` fails and the pool stays off:
//! every run then falls back to `CLONE_NEWNET`.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Condvar, Mutex, OnceLock};

/// The ready namespaces and the refill thread's wake-up.
struct Pool {
    ready: Mutex<Ready>,
    refill: Condvar,
}

struct Ready {
    fds: Vec<OwnedFd>,
    capacity: usize,
    /// How many more namespaces to create at most (a one-shot process wants exactly one).
    budget: usize,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Keeps up to `capacity` empty network namespaces ready for [`run`](super::run) (see the module
/// docs), creating them on a background thread. Call it early — at process start, before
/// verification — so the first one is ready by the time the sandbox starts. Calling it again
/// raises the capacity (never lowers it). Best effort: without the privilege to create network
/// namespaces the pool stays empty and runs create their own.
pub fn prepare_network_namespaces(capacity: usize) {
    start(capacity.max(1), usize::MAX);
}

/// Prepares exactly one empty network namespace, for a process that starts one sandbox and
/// exits (`perry-sandbox run`): the same as [`prepare_network_namespaces`]`(1)` without the
/// refill after the run takes it.
pub fn prepare_one_network_namespace() {
    start(1, 1);
}

fn start(capacity: usize, budget: usize) {
    let mut started = false;
    let pool = POOL.get_or_init(|| {
        started = true;
        Pool {
            ready: Mutex::new(Ready {
                fds: Vec::new(),
                capacity,
                budget,
            }),
            refill: Condvar::new(),
        }
    });
    if !started {
        let mut r = lock(pool);
        r.capacity = r.capacity.max(capacity);
        r.budget = r.budget.max(budget);
    }
    pool.refill.notify_one();
    if started {
        // Without a refill thread the pool just stays empty.
        let _ = std::thread::Builder::new()
            .name("perry-netns".into())
            .spawn(move || refill(pool));
    }
}

/// How many prepared namespaces are waiting now (each holds one fd of this process).
pub fn prepared_network_namespaces() -> usize {
    POOL.get().map_or(0, |p| lock(p).fds.len())
}

/// A prepared namespace for one run, if one is ready; the refill thread is woken to replace it.
pub(crate) fn take() -> Option<OwnedFd> {
    let pool = POOL.get()?;
    let fd = lock(pool).fds.pop();
    pool.refill.notify_one();
    fd
}

fn lock(pool: &Pool) -> std::sync::MutexGuard<'_, Ready> {
    pool.ready.lock().unwrap_or_else(|p| p.into_inner())
}

/// The refill thread: whenever fewer than `capacity` namespaces are ready, make one.
fn refill(pool: &'static Pool) {
    // Where this thread returns after each creation, so it never lingers in a namespace a
    // sandbox is using.
    let Ok(home) = open_own_netns() else {
        return;
    };
    loop {
        {
            let mut r = lock(pool);
            while r.fds.len() >= r.capacity || r.budget == 0 {
                r = pool.refill.wait(r).unwrap_or_else(|p| p.into_inner());
            }
            r.budget -= 1;
        }
        match create(&home) {
            Ok(fd) => lock(pool).fds.push(fd),
            // No privilege (or the thread is stuck elsewhere): stop; runs use CLONE_NEWNET.
            Err(_) => return,
        }
    }
}

/// Creates one empty network namespace and returns an fd holding it, leaving this thread where
/// it was (`home`).
fn create(home: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: unshare affects only the calling thread's network namespace (this refill thread,
    // which holds no sockets).
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = open_own_netns();
    setns(home)?;
    fd
}

/// The calling thread's network namespace, as an fd.
fn open_own_netns() -> io::Result<OwnedFd> {
    File::open("/proc/thread-self/ns/net").map(OwnedFd::from)
}

fn setns(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: setns with a namespace fd we own; affects only the calling thread.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread, moved into a prepared namespace for the duration of one `clone`.
/// [`Entered::leave`] (or drop) moves it back.
pub(crate) struct Entered {
    home: Option<OwnedFd>,
}

impl Entered {
    /// Moves the calling thread into `netns`. The namespace fd itself can be closed afterwards:
    /// the thread (and then the cloned sandbox) keeps the namespace alive.
    pub(crate) fn enter(netns: &OwnedFd) -> io::Result<Entered> {
        let home = open_own_netns()?;
        setns(netns)?;
        Ok(Entered { home: Some(home) })
    }

    /// Moves the calling thread back to the namespace it came from.
    pub(crate) fn leave(mut self) -> io::Result<()> {
        match self.home.take() {
            Some(home) => setns(&home),
            None => Ok(()),
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            // Only reached when `leave` was not called (an early return); nothing to report to.
            let _ = setns(&home);
        }
    }
}
