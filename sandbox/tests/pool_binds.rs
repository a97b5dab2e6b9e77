//! The warm pool, attacked: a real spawner (this test binary re-executed), real sandboxes.
//!
//! - A warm run answers as soon as init reports, while init's own exit still runs; by then
//!   every process the request started (background ones included) is gone.
//! - A workspace is pinned when its request is checked; if its path is swapped for a symlink to
//!   another directory before the request runs (the check-then-mount race a hostile workspace
//!   owner would try), the warm sandbox still gets the directory that was checked.
//! - A sandbox taken the moment it was started (still building its filesystem) gets its mount
//!   where its workload will see it, not into the host's tree its namespace still shows.
//! - Moving the mount in never moves any thread of the service out of the host's mount
//!   namespace.

mod native_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use native_support::*;
use perry_runtime::native::{spawner_main, BindMount, Spawner, StepRecipe, WarmPool, SPAWNER_ARG};

fn main() {
    // This binary is also the pool's spawner.
    if std::env::args().nth(1).as_deref() == Some(SPAWNER_ARG) {
        spawner_main();
    }
    a_pinned_workspace_swapped_after_its_check_is_still_the_one_a_warm_sandbox_gets();
    no_process_of_a_warm_run_outlives_its_answer();
    println!("pool_binds: ok");
}

/// The mount namespace of every thread of this process.
fn mount_namespaces() -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_link(t.ok()?.path().join("ns/mnt")).ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn a_pinned_workspace_swapped_after_its_check_is_still_the_one_a_warm_sandbox_gets() {
    let r = rootfs();
    let (host, ws, other) = swap_workspaces();
    let host_ns = mount_namespaces();
    assert_eq!(host_ns.len(), 1, "{host_ns:?}");

    let exe = std::env::current_exe().unwrap();
    let pool = WarmPool::new(Arc::new(Spawner::start_program(exe).unwrap()), 1).unwrap();
    let grants = perry_profiles::Grants {
        readable: vec!["/work".into()],
        ..Default::default()
    };
    let step = Arc::new(hardened_with(grants.clone()));
    let recipe = StepRecipe {
        tier: perry_policies::Tier::Hardened,
        overrides: None,
        grants,
    };
    let mut spec = r.sh("ls /work");
    spec.mounts = vec![BindMount::pinned(&ws, "/work", true).unwrap()];
    // The first request registers the shape and runs cold; the pool then starts one ahead.
    let first = pool.run(&spec, &step, &recipe).expect("first run");
    assert_eq!(text(&first.outcome.stdout), "checked\n", "{first:?}");
    // Take each sandbox the moment it is there, while busy threads keep both cores full: it
    // may still be building its filesystem.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let ready = || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while pool.ready(&spec, &recipe) == 0 {
            assert!(Instant::now() < deadline, "the pool never filled");
            std::hint::spin_loop();
        }
    };
    for i in 0..20 {
        ready();
        let o = pool.run(&spec, &step, &recipe).expect("warm run");
        assert!(o.warm, "{i}: {o:?}");
        assert_eq!(text(&o.outcome.stdout), "checked\n", "{i}: {o:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    ready();

    // The next request is checked (pinned) ...
    let mount = BindMount::pinned(&ws, "/work", true).unwrap();
    // ... and then its path leads elsewhere.
    std::fs::rename(&ws, host.path().join("ws.moved")).unwrap();
    std::os::unix::fs::symlink(&other, &ws).unwrap();
    spec.mounts = vec![mount];
    let warm = pool.run(&spec, &step, &recipe).expect("warm run");
    assert!(warm.warm, "{warm:?}");
    assert_eq!(
        text(&warm.outcome.stdout),
        "checked\n",
        "the warm sandbox got the swapped directory: {warm:?}"
    );
    assert_eq!(
        mount_namespaces(),
        host_ns,
        "a thread stayed in a sandbox's namespace"
    );
}

/// Sandbox processes (their uid in the test range; zombies too) named `sleep`: what the test's
/// workloads leave behind. The pool's waiting sandbox is never one of them.
fn sleepers() -> Vec<(u32, String)> {
    sandbox_processes()
        .into_iter()
        .filter(|(_, name)| name.split_whitespace().nth(1) == Some("sleep"))
        .collect()
}

fn no_process_of_a_warm_run_outlives_its_answer() {
    let r = rootfs();
    let exe = std::env::current_exe().unwrap();
    let pool = WarmPool::new(Arc::new(Spawner::start_program(exe).unwrap()), 1).unwrap();
    let step = Arc::new(hardened_with(perry_profiles::Grants::default()));
    let recipe = StepRecipe {
        tier: perry_policies::Tier::Hardened,
        overrides: None,
        grants: perry_profiles::Grants::default(),
    };
    // Ten background processes that would sleep for an hour, not holding the output pipes
    // (so the answer cannot wait for their end of stream), and a foreground that ends now.
    let spec =
        r.sh("for i in 1 2 3 4 5 6 7 8 9 10; do sleep 4242 >/dev/null 2>&1 & done; echo started");
    assert!(sleepers().is_empty(), "{:?}", sleepers());
    let first = pool.run(&spec, &step, &recipe).expect("first run");
    assert_eq!(text(&first.outcome.stdout), "started\n", "{first:?}");
    for i in 0..50 {
        let deadline = Instant::now() + Duration::from_secs(20);
        while pool.ready(&spec, &recipe) == 0 {
            assert!(Instant::now() < deadline, "the pool never filled");
            std::thread::sleep(Duration::from_millis(1));
        }
        let o = pool.run(&spec, &step, &recipe).expect("warm run");
        assert!(o.warm, "{i}: {o:?}");
        assert_eq!(text(&o.outcome.stdout), "started\n", "{i}: {o:?}");
        // At once, without settling: the answer means they are gone.
        let left = sleepers();
        assert!(left.is_empty(), "{i}: alive after the answer: {left:?}");
    }
}
