//! `serve`'s sandbox spawner, attacked from outside: a real service, real sandboxes.
//!
//! - Its memory and a sandbox init's hold none of the service's secrets (the verification
//!   cache's MAC key, the audit signing key), read as root through `/proc/PID/mem`, while the
//!   same scan finds both in the service itself (the control that shows the scan can see them).
//! - Killed mid-load, calls in flight fail with a clear 503 (`service_unavailable`), the next
//!   calls run on a new spawner, and no sandbox or run cgroup is left.

mod service_support;

use std::io::{BufRead, Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use service_support::*;
use sha2::{Digest, Sha512};

/// The spawner's marker argument, as `ps` shows it.
const SPAWNER: &str = perry_runtime::native::SPAWNER_ARG;

/// The direct children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        if rest.split(' ').nth(1).and_then(|s| s.parse::<u32>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// The service's spawner: its child running with the spawner argument.
fn spawner_of(service: u32) -> Option<u32> {
    children(service).into_iter().find(|p| {
        std::fs::read(format!("/proc/{p}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(SPAWNER))
            .unwrap_or(false)
    })
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether any readable mapping of `pid` contains `needle` (read as root, `/proc/PID/mem`).
fn memory_contains(pid: u32, needle: &[u8]) -> bool {
    let maps = std::fs::File::open(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    for line in std::io::BufReader::new(maps).lines().map_while(Result::ok) {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        if buf.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}

/// What ring keeps of an Ed25519 key (the second half of SHA-512 of the seed, verbatim), from
/// the PKCS#8 document on disk: the seed is the OCTET STRING inside the OCTET STRING.
fn ed25519_prefix(pkcs8: &[u8]) -> Vec<u8> {
    let at = pkcs8
        .windows(4)
        .position(|w| w == [0x04, 0x22, 0x04, 0x20])
        .expect("an Ed25519 PKCS#8 seed");
    let seed = &pkcs8[at + 4..at + 36];
    Sha512::digest(seed)[32..].to_vec()
}

#[test]
fn neither_the_spawner_nor_a_sandbox_init_holds_the_services_keys() {
    let w = World::new(ServiceToml::default());
    let svc = w.serve(&[]);
    let rt = rt();
    let c = w.client();
    // A first call: the cache's key and the audit key are in use.
    let out = rt.block_on(c.invoke("echo", &req(&["warm"]))).unwrap();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    let spawner = spawner_of(svc.pid()).expect("serve runs a spawner");

    let sleeper = {
        let c = w.client();
        std::thread::spawn(move || rt.block_on(c.invoke("sleep", &req(&["25"]))))
    };
    let init = wait_for("a sandbox init", Duration::from_secs(20), || {
        children(spawner).into_iter().find(|p| alive(*p))
    });

    let mac = std::fs::read(w.state().join("verify-cache/mac.key")).unwrap();
    let audit = ed25519_prefix(&std::fs::read(w.state().join("audit/signing-key.pk8")).unwrap());
    assert!(mac.len() >= 32, "{}", mac.len());
    for (what, secret) in [("cache MAC key", &mac), ("audit signing key", &audit)] {
        let t = Instant::now();
        assert!(
            !memory_contains(init, secret),
            "a sandbox init's memory holds the {what}"
        );
        assert!(
            !memory_contains(spawner, secret),
            "the spawner's memory holds the {what}"
        );
        assert!(
            memory_contains(svc.pid(), secret),
            "control: the scan does not find the {what} in the service itself"
        );
        eprintln!("{what}: three scans in {:?}", t.elapsed());
    }
    assert!(alive(init), "the init scanned was still running");
    let out = sleeper.join().unwrap().unwrap();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
}

#[test]
fn a_killed_spawner_fails_calls_in_flight_with_503_is_restarted_and_leaves_no_sandbox() {
    let w = World::new(ServiceToml::default());
    let svc = w.serve(&[]);
    let rt = std::sync::Arc::new(rt());
    let c = w.client();
    assert_eq!(
        rt.block_on(c.invoke("echo", &req(&["before"])))
            .unwrap()
            .stdout,
        "before\n"
    );
    let old = spawner_of(svc.pid()).expect("serve runs a spawner");

    let calls: Vec<_> = (0..6)
        .map(|_| {
            let c = w.client();
            let rt = std::sync::Arc::clone(&rt);
            std::thread::spawn(move || {
                let r = rt.block_on(c.invoke("sleep", &req(&["20"])));
                (r, Instant::now())
            })
        })
        .collect();
    // All six calls running (the warm pool's inits are the spawner's children too, so count
    // the sleeps themselves): each is in flight when the spawner dies.
    wait_for(
        "calls running in sandboxes",
        Duration::from_secs(30),
        || (processes_with("sleep 20").len() >= 6).then_some(()),
    );
    let inits = children(old);
    // The run cgroups of every sandbox the old spawner holds: running calls and the warm pool.
    let doomed = run_cgroups_of(svc.pid());
    assert!(!doomed.is_empty());
    let started = Instant::now();
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);

    let mut refused = 0;
    for call in calls {
        let (result, ended) = call.join().unwrap();
        match result {
            Err(e) => {
                // The sandboxes died with the spawner: nobody waited out their 20 s.
                let after = ended.duration_since(started);
                assert!(
                    after < Duration::from_secs(10),
                    "refused {after:?} after the kill"
                );
                assert_eq!(e.code, "service_unavailable", "{e:?}");
                assert_eq!(e.status, 503, "{e:?}");
                assert!(e.message.contains("spawner"), "{e:?}");
                refused += 1;
            }
            // A call that reached the service after the kill runs on the new spawner.
            Ok(out) => assert_eq!(out.exit_code, Some(0), "{out:?}"),
        }
    }
    assert!(refused >= 3, "only {refused} calls in flight were refused");
    // The sandboxes died with the spawner: nobody waited out their 20 s.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // The next call runs, on a new spawner.
    let out = rt.block_on(c.invoke("echo", &req(&["after"]))).unwrap();
    assert_eq!(out.stdout, "after\n");
    let new = spawner_of(svc.pid()).expect("a new spawner");
    assert_ne!(new, old);

    // Nothing is left: the old spawner's inits are gone (or zombies reaped by whoever adopted
    // them: nothing runs), and none of their run cgroups remains (the warm pool refills with
    // new ones, cloned by the new spawner).
    wait_for("the old sandboxes to go", Duration::from_secs(10), || {
        inits.iter().all(|p| !alive(*p)).then_some(())
    });
    wait_for("their run cgroups to go", Duration::from_secs(10), || {
        doomed.iter().all(|d| !d.exists()).then_some(())
    });
    // The refusals are on the record as errors with the same code.
    let errors: Vec<_> = w
        .audit()
        .into_iter()
        .filter(|r| r["decision"] == "error" && r["details"]["code"] == "service_unavailable")
        .collect();
    assert!(errors.len() >= refused, "{errors:?}");
}
