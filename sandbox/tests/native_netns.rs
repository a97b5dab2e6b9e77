//! Network namespaces prepared ahead of a run (`prepare_network_namespaces`): each run gets a
//! fresh, empty one of its own that not even root inside the sandbox can configure. Its own test
//! binary, because the pool is process-wide: here every run without a loopback grant uses it.

mod native_support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use native_support::{hardened, rootfs, text};
use perry_runtime::native::{
    prepare_network_namespaces, prepared_network_namespaces, run, FinalStep, MinimalFinalStep,
};

const CAPACITY: usize = 2;

/// The pool is process-wide: the tests take turns, so one's snapshot of it is not another's run.
static POOL_USERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    POOL_USERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the pool and waits until it is full, so nothing is added until the next run takes one.
fn pool_full() {
    prepare_network_namespaces(CAPACITY);
    let deadline = Instant::now() + Duration::from_secs(10);
    while prepared_network_namespaces() < CAPACITY {
        assert!(Instant::now() < deadline, "network namespaces not prepared");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn netns_link(path: &str) -> String {
    std::fs::read_link(path)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The network namespaces this process holds fds of, other than its own: the pool's.
fn pool_namespaces() -> Vec<String> {
    let host = netns_link("/proc/self/ns/net");
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| l.starts_with("net:[") && *l != host)
        .collect()
}

fn readlink_netns() -> Vec<String> {
    vec!["readlink".into(), "/proc/self/ns/net".into()]
}

#[test]
fn a_run_takes_a_prepared_namespace_which_is_empty_unconfigurable_and_used_once() {
    let _turn = turn();
    let r = rootfs();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "readlink /proc/self/ns/net; cat /proc/net/dev | tail -n +3 | cut -d: -f1; \
         ip link set lo up; echo ip=$?; echo probe | nc -w 1 127.0.0.1 {port}; echo nc=$?"
    );
    // Root inside the sandbox: the strongest position a workload can hold there.
    let mut s = r.sh(&script);
    s.uid = 0;
    s.gid = 0;
    let steps: [&dyn FinalStep; 2] = [&MinimalFinalStep, &hardened()];
    for step in steps {
        pool_full();
        let ready = pool_namespaces();
        assert_eq!(ready.len(), CAPACITY, "{ready:?}");
        let o = run(&s, step).expect("run");
        let out = text(&o.stdout);
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert!(lines.len() >= 4, "{out}\n{}", text(&o.stderr));
        // The sandbox ran in one of the namespaces that were ready...
        assert!(
            ready.iter().any(|n| n == lines[0]),
            "{} not in {ready:?}",
            lines[0]
        );
        // ... which the pool no longer holds: it lived and died with this one sandbox.
        assert!(
            !pool_namespaces().iter().any(|n| n == lines[0]),
            "{} still held after the run",
            lines[0]
        );
        assert_eq!(lines[1], "lo", "only lo: {out}");
        assert!(
            lines[2].starts_with("ip=") && lines[2] != "ip=0",
            "lo configured: {out}"
        );
        assert!(out.contains("nc=1"), "connected: {out}");
        assert!(listener.accept().is_err(), "host listener reached");
    }
}

#[test]
fn concurrent_runs_never_share_a_namespace_and_the_pool_stays_bounded() {
    let _turn = turn();
    let r = rootfs();
    let host = netns_link("/proc/self/ns/net");
    pool_full();
    // Alive at the same time, so equal inode numbers would mean one shared namespace.
    let seen: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                sc.spawn(|| {
                    let o = run(
                        &r.sh("readlink /proc/self/ns/net; sleep 0.5"),
                        &MinimalFinalStep,
                    )
                    .expect("run");
                    text(&o.stdout).trim().to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "a namespace was shared: {seen:?}");
    assert!(
        seen.iter().all(|n| n.starts_with("net:[") && *n != host),
        "{seen:?}"
    );
    // The pool holds at most its capacity, however many runs took from it...
    for _ in 0..6 {
        run(&r.spec(readlink_netns()), &MinimalFinalStep).expect("run");
    }
    assert!(
        pool_namespaces().len() <= CAPACITY,
        "{:?}",
        pool_namespaces()
    );
    // ... and the calling threads are back in the host's namespace.
    assert_eq!(netns_link("/proc/thread-self/ns/net"), host);
}
