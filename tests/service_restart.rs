//! Restart safety of `perry-sandbox serve`: after `kill -9` mid-run, the sandbox dies with its
//! supervisor and the next start removes what was left. In its own test binary because every
//! service start sweeps stale run cgroups: a service started by another test in the same process
//! would clean up before this test could see that there was something to clean.

mod service_support;

use std::time::{Duration, Instant};

use service_support::*;

#[test]
fn after_kill_9_mid_run_the_next_start_removes_what_was_left() {
    let w = World::new(ServiceToml::default());
    let mut svc = w.serve(&["--prewarm"]);
    let pid = svc.pid();
    let rt = rt();
    let c = w.client();
    // A distinctive sleep, so its process can be found on the host.
    let call = rt.spawn({
        let c = c.clone();
        async move { c.invoke("sleep", &req(&["47"])).await }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_with("sleep 47").is_empty() || run_cgroups_of(pid).is_empty() {
        assert!(Instant::now() < deadline, "the sandbox never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    svc.signal("-KILL");
    svc.wait(Duration::from_secs(10));
    let err = rt.block_on(call).unwrap().unwrap_err();
    assert_eq!(err.code, "service_unavailable", "{err:?}");
    // The sandbox died with its supervisor (parent-death signal): no process outlives it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with("sleep 47").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the sandboxed sleep outlived the service"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its cgroups were left behind by the kill; the next start removes them.
    assert!(
        !run_cgroups_of(pid).is_empty(),
        "nothing was left to clean up"
    );
    let svc2 = w.serve(&[]);
    assert!(
        run_cgroups_of(pid).is_empty(),
        "stale cgroups survived a restart: {:?}",
        run_cgroups_of(pid)
    );
    // And the restarted service works.
    let out = rt.block_on(c.invoke("echo", &req(&["again"]))).unwrap();
    assert_eq!(out.stdout, "again\n");
    drop(svc2);
}
