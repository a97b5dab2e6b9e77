//! `perry-backends` against real podman + runc on this host, with an image pushed to the loopback
//! registry, signed by the sigstore-js stack and verified by the real verifier: the only way to
//! get the `PinnedImage` every container is created from.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{podman, rt, spec, status_field, status_value, unique, world};
use perry_backends::{
    BackendError, ContainerBackend, ContainerSpec, ContainerStatus, Dialect, DockerProtocol,
    ExecSpec, IsolationLevel, LogOptions, LogStream, Mount, NetworkAttachment, NetworkSpec,
    PinnedImage, PortMapping, VolumeSpec,
};
use perry_policies::Tier;

#[test]
fn a_hardened_container_runs_confined_from_the_verified_digest() {
    let rt = rt();
    let p = podman();
    let w = world();
    let image = PinnedImage::from_verified(&w.image);
    rt.block_on(p.pull(&image)).unwrap();
    assert!(rt.block_on(p.image_exists(&image)).unwrap());
    let name = unique("hardened");
    let s = spec(
        &name,
        Tier::Hardened,
        &[
            "sh",
            "-c",
            "cat /proc/self/status; id -u; touch /x 2>/dev/null && echo wrote-root || echo ro-root; nc -w1 10.0.0.1 80 </dev/null 2>/dev/null && echo net || echo no-net; cat /etc/perry-marker",
        ],
    );
    let out = rt.block_on(p.run(&s)).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.exit_code,
        0,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Checked from inside: no capabilities at all, seccomp filtering, no_new_privs.
    assert_eq!(status_field(&text, "CapEff"), "0000000000000000", "{text}");
    assert_eq!(status_field(&text, "CapBnd"), "0000000000000000", "{text}");
    assert_eq!(status_field(&text, "Seccomp"), "2", "{text}");
    assert_eq!(status_field(&text, "NoNewPrivs"), "1", "{text}");
    assert!(text.contains("\n65534\n"), "non-root: {text}");
    assert!(
        text.contains("ro-root") && !text.contains("wrote-root"),
        "{text}"
    );
    assert!(text.contains("no-net"), "{text}");
    assert!(text.contains("backends"), "the verified image ran: {text}");
    // `run` removes what it made: nothing is left under the test label.
    let left = rt.block_on(p.list("io.perry-sandbox.test", &name)).unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn lifecycle_exec_inspect_and_failure_paths() {
    let rt = rt();
    let p = podman();
    let w = world();
    rt.block_on(p.pull(&PinnedImage::from_verified(&w.image)))
        .unwrap();
    let name = unique("life");
    let s = spec(&name, Tier::Isolated, &["sleep", "60"]);
    let id = rt.block_on(p.create(&s)).unwrap();
    // A second container with the same name is refused by the backend, not hidden.
    let e = rt.block_on(p.create(&s)).unwrap_err();
    assert!(matches!(e, BackendError::Cli { .. }), "{e}");
    rt.block_on(p.start(&id)).unwrap();
    let info = rt.block_on(p.inspect(&id)).unwrap();
    assert_eq!(info.labels.get("io.perry-sandbox.test"), Some(&name));
    let out = rt
        .block_on(p.exec(
            &id,
            &ExecSpec {
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo $GREETING; pwd; exit 3".into(),
                ],
                env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
                workdir: Some("/tmp".into()),
                user: None,
            },
        ))
        .unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n/tmp\n");
    assert_eq!(
        rt.block_on(p.list("io.perry-sandbox.test", &name))
            .unwrap()
            .len(),
        1
    );
    rt.block_on(p.stop(&id, Duration::from_secs(1))).unwrap();
    let code = rt.block_on(p.wait(&id)).unwrap();
    assert_ne!(code, 0, "sleep was stopped, not finished");
    rt.block_on(p.remove(&id, true)).unwrap();
    assert!(rt
        .block_on(p.list("io.perry-sandbox.test", &name))
        .unwrap()
        .is_empty());
    // A container that is gone is `not_found`.
    let e = rt.block_on(p.inspect(&id)).unwrap_err();
    assert_eq!(e.code().as_str(), "not_found", "{e}");
}

#[test]
fn networks_and_volumes_are_created_labelled_listed_and_removed() {
    let rt = rt();
    let p = podman();
    let net = unique("net");
    let labels = BTreeMap::from([("io.perry-sandbox.test".to_string(), net.clone())]);
    rt.block_on(p.network_create(&NetworkSpec {
        name: net.clone(),
        internal: true,
        labels: labels.clone(),
    }))
    .unwrap();
    let info = rt.block_on(p.network_inspect(&net)).unwrap();
    assert!(info.internal, "{info:?}");
    assert_eq!(
        rt.block_on(p.network_list("io.perry-sandbox.test", &net))
            .unwrap(),
        vec![net.clone()]
    );
    rt.block_on(p.network_remove(&net)).unwrap();
    let e = rt.block_on(p.network_inspect(&net)).unwrap_err();
    assert_eq!(e.code().as_str(), "not_found", "{e}");

    let vol = unique("vol");
    rt.block_on(p.volume_create(&VolumeSpec {
        name: vol.clone(),
        labels: BTreeMap::from([("io.perry-sandbox.test".to_string(), vol.clone())]),
    }))
    .unwrap();
    assert_eq!(
        rt.block_on(p.volume_list("io.perry-sandbox.test", &vol))
            .unwrap(),
        vec![vol.clone()]
    );
    rt.block_on(p.volume_remove(&vol)).unwrap();
    assert!(rt
        .block_on(p.volume_list("io.perry-sandbox.test", &vol))
        .unwrap()
        .is_empty());
    let _ = &world().reg;
}

#[test]
fn untrusted_runs_under_gvisor_with_its_seccomp_profile_applied() {
    let rt = rt();
    let p = podman();
    let w = world();
    rt.block_on(p.pull(&PinnedImage::from_verified(&w.image)))
        .unwrap();
    let name = unique("untrusted");
    let s = spec(
        &name,
        Tier::Untrusted,
        &[
            "sh",
            "-c",
            "cat /proc/self/status; cat /proc/version; echo busybox-ran",
        ],
    );
    let out = rt.block_on(p.run(&s)).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.exit_code,
        0,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("busybox-ran"), "{text}");
    // The tier's seccomp profile is applied inside gVisor (oci-seccomp), not silently dropped.
    assert_eq!(status_field(&text, "Seccomp"), "2", "{text}");
    assert_eq!(status_field(&text, "CapEff"), "0000000000000000", "{text}");
    // gVisor's own kernel answers, not the host's.
    let host = std::fs::read_to_string("/proc/version").unwrap();
    assert!(
        !text.contains(host.trim()),
        "ran on the host kernel: {text}"
    );

    // Stopped like any container: its workload's trap runs (the host pid is gVisor's sandbox,
    // which `stop_many` leaves to the runtime).
    let name = unique("untrusted-stop");
    let id = started(
        &p,
        &spec(
            &name,
            Tier::Untrusted,
            &[
                "sh",
                "-c",
                "trap 'exit 3' TERM; touch /tmp/trapped; sleep 60 & wait",
            ],
        ),
    );
    let ready = ExecSpec {
        cmd: vec!["test".into(), "-f".into(), "/tmp/trapped".into()],
        ..ExecSpec::default()
    };
    for _ in 0..100 {
        if rt
            .block_on(p.exec(&id, &ready))
            .is_ok_and(|o| o.exit_code == 0)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let info = rt.block_on(p.inspect(&id)).unwrap();
    assert_eq!(info.isolation, IsolationLevel::SandboxedKernel);
    rt.block_on(p.stop_many(&[info], Some(Duration::from_secs(5))))
        .unwrap();
    assert_eq!(rt.block_on(p.wait(&id)).unwrap(), 3);
    rt.block_on(p.remove_many(&[id])).unwrap();
}

#[test]
fn untrusted_is_refused_before_anything_is_created_without_a_sandboxed_kernel() {
    let rt = rt();
    let p = podman().with_sandbox(None);
    let name = unique("nosandbox");
    let s = spec(&name, Tier::Untrusted, &["true"]);
    let e = rt.block_on(p.run(&s)).unwrap_err();
    assert_eq!(e.code().as_str(), "isolation_unavailable", "{e}");
    assert!(
        e.to_string().contains("runsc"),
        "names what to install: {e}"
    );
    assert!(rt
        .block_on(p.list("io.perry-sandbox.test", &name))
        .unwrap()
        .is_empty());
}

/// Creates and starts `spec`, returning its id.
fn started(p: &DockerProtocol, s: &ContainerSpec) -> String {
    let rt = rt();
    let id = rt.block_on(p.create(s)).unwrap();
    rt.block_on(p.start(&id)).unwrap();
    id
}

fn labelled(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("io.perry-sandbox.test".to_string(), name.to_string())])
}

#[test]
fn a_follower_streams_both_streams_while_the_container_runs_and_ends_when_it_exits() {
    let rt = rt();
    let p = podman();
    rt.block_on(p.pull(&PinnedImage::from_verified(&world().image)))
        .unwrap();
    let name = unique("follow");
    let s = spec(
        &name,
        Tier::Hardened,
        &[
            "sh",
            "-c",
            "echo first; echo warn >&2; sleep 6; echo second",
        ],
    );
    let id = started(&p, &s);
    rt.block_on(async {
        let mut f = p.follow(&id, None).await.unwrap();
        let mut seen = Vec::new();
        // The first line comes while the container still runs (streamed, not collected).
        let first = tokio::time::timeout(Duration::from_secs(20), f.next_line())
            .await
            .expect("a line within 20 s")
            .expect("a line before the end");
        assert_eq!(
            p.inspect(&id).await.unwrap().status,
            ContainerStatus::Running,
            "the first line ({first:?}) came only after the container exited"
        );
        seen.push(first);
        while let Some(l) = tokio::time::timeout(Duration::from_secs(30), f.next_line())
            .await
            .expect("the follower ends when the container exits")
        {
            seen.push(l);
        }
        let has = |stream, text: &str| seen.iter().any(|l| l.stream == stream && l.text == text);
        assert!(has(LogStream::Stdout, "first"), "{seen:?}");
        assert!(has(LogStream::Stderr, "warn"), "{seen:?}");
        assert!(has(LogStream::Stdout, "second"), "{seen:?}");
    });
    rt.block_on(p.remove(&id, true)).unwrap();
}

#[test]
fn logs_are_untruncated_kept_apart_tailed_and_followed() {
    let rt = rt();
    let p = podman();
    rt.block_on(p.pull(&PinnedImage::from_verified(&world().image)))
        .unwrap();
    let name = unique("logs");
    // ~1.3 MB on stdout: far past any pipe buffer or line limit.
    let s = spec(
        &name,
        Tier::Hardened,
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 20000 ]; do echo out-$i-abcdefghijklmnopqrstuvwxyz-abcdefghijklmnopqrstuvwxyz; i=$((i+1)); done; echo err-1 >&2; echo err-2 >&2; sleep 1; echo last",
        ],
    );
    let id = started(&p, &s);
    // Follow returns when the container exits, with everything it wrote.
    let all = rt
        .block_on(p.logs(
            &id,
            LogOptions {
                tail: None,
                follow: true,
            },
        ))
        .unwrap();
    let mut want = String::new();
    for i in 0..20000 {
        want.push_str(&format!(
            "out-{i}-abcdefghijklmnopqrstuvwxyz-abcdefghijklmnopqrstuvwxyz\n"
        ));
    }
    want.push_str("last\n");
    if all.stdout != want.as_bytes() {
        let at = all
            .stdout
            .iter()
            .zip(want.as_bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(all.stdout.len().min(want.len()));
        let show = |b: &[u8]| {
            String::from_utf8_lossy(&b[at.saturating_sub(80)..(at + 80).min(b.len())]).into_owned()
        };
        panic!(
            "stdout differs at byte {at} ({} vs {} bytes):\ngot  {:?}\nwant {:?}",
            all.stdout.len(),
            want.len(),
            show(&all.stdout),
            show(want.as_bytes())
        );
    }
    assert_eq!(String::from_utf8_lossy(&all.stderr), "err-1\nerr-2\n");
    assert_eq!(rt.block_on(p.wait(&id)).unwrap(), 0);
    let tail = rt
        .block_on(p.logs(
            &id,
            LogOptions {
                tail: Some(1),
                follow: false,
            },
        ))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&tail.stdout), "last\n");
    rt.block_on(p.remove(&id, false)).unwrap();
    let e = rt.block_on(p.logs(&id, LogOptions::default())).unwrap_err();
    assert_eq!(e.code().as_str(), "not_found", "{e}");
}

#[test]
fn exits_kills_exec_users_and_their_failure_paths() {
    let rt = rt();
    let p = podman();
    rt.block_on(p.pull(&PinnedImage::from_verified(&world().image)))
        .unwrap();
    // A container that exits: its code through wait and inspect.
    let name = unique("exit7");
    let id = started(&p, &spec(&name, Tier::Hardened, &["sh", "-c", "exit 7"]));
    assert_eq!(rt.block_on(p.wait(&id)).unwrap(), 7);
    let info = rt.block_on(p.inspect(&id)).unwrap();
    assert_eq!(info.status, ContainerStatus::Exited);
    assert_eq!(info.exit_code, Some(7));
    assert_eq!(info.isolation, IsolationLevel::Container);
    // exec into a container that is not running: the backend's error, with its exit code.
    let e = rt
        .block_on(p.exec(
            &id,
            &ExecSpec {
                cmd: vec!["true".into()],
                ..ExecSpec::default()
            },
        ))
        .unwrap_err();
    assert_eq!(e.code().as_str(), "backend_error", "{e}");
    assert!(e.exit_code().is_some_and(|c| c != 0), "{e}");
    assert!(e.to_string().contains("state improper"), "{e}");
    rt.block_on(p.remove(&id, false)).unwrap();

    // A command that does not exist: start fails with the CLI's exit code and stderr.
    let name = unique("nocmd");
    let id = rt
        .block_on(p.create(&spec(&name, Tier::Hardened, &["/no/such/program"])))
        .unwrap();
    let e = rt.block_on(p.start(&id)).unwrap_err();
    match &e {
        BackendError::Cli {
            exit_code, stderr, ..
        } => {
            assert_ne!(*exit_code, 0);
            assert!(stderr.contains("/no/such/program"), "{stderr}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.code().as_str(), "backend_error");
    rt.block_on(p.remove(&id, true)).unwrap();

    // kill, exec as another user, remove without force while running.
    let name = unique("kill");
    let id = started(&p, &spec(&name, Tier::Isolated, &["sleep", "60"]));
    let out = rt
        .block_on(p.exec(
            &id,
            &ExecSpec {
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "id -u; id -g; ls /sys/class/net".into(),
                ],
                user: Some("1234:5678".into()),
                ..ExecSpec::default()
            },
        ))
        .unwrap();
    // No project network: loopback only, not the backend's default bridge.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1234\n5678\nlo\n");
    let out = rt
        .block_on(p.exec(
            &id,
            &ExecSpec {
                cmd: vec!["/no/such/program".into()],
                ..ExecSpec::default()
            },
        ))
        .unwrap();
    assert_eq!(out.exit_code, 127, "the command's status, not an error");
    let e = rt.block_on(p.remove(&id, false)).unwrap_err();
    assert_eq!(e.code().as_str(), "backend_error", "{e}");
    rt.block_on(p.kill(&id, "KILL")).unwrap();
    assert_eq!(rt.block_on(p.wait(&id)).unwrap(), 137);
    rt.block_on(p.remove(&id, false)).unwrap();
    for e in [
        rt.block_on(p.start(&id)).unwrap_err(),
        rt.block_on(p.kill(&id, "KILL")).unwrap_err(),
        rt.block_on(p.stop(&id, Duration::from_secs(1)))
            .unwrap_err(),
        rt.block_on(p.wait(&id)).map(drop).unwrap_err(),
        rt.block_on(p.remove(&id, false)).unwrap_err(),
    ] {
        assert_eq!(e.code().as_str(), "not_found", "{e}");
        assert_eq!(e.status(), 404);
    }
    // Forced removal is idempotent (rollback may retry it).
    rt.block_on(p.remove(&id, true)).unwrap();
}

#[test]
fn network_connect_with_aliases_and_only_internal_networks_for_isolated() {
    let rt = rt();
    let p = podman();
    rt.block_on(p.pull(&PinnedImage::from_verified(&world().image)))
        .unwrap();
    let (front, back, open) = (unique("front"), unique("back"), unique("open"));
    for (n, internal) in [(&front, true), (&back, true), (&open, false)] {
        rt.block_on(p.network_create(&NetworkSpec {
            name: n.clone(),
            internal,
            labels: labelled(&front),
        }))
        .unwrap();
    }
    let mut listed = rt
        .block_on(p.network_list("io.perry-sandbox.test", &front))
        .unwrap();
    listed.sort();
    let mut want = vec![front.clone(), back.clone(), open.clone()];
    want.sort();
    assert_eq!(listed, want);
    assert!(rt
        .block_on(p.network_list("io.perry-sandbox.test", &back))
        .unwrap()
        .is_empty());

    // An isolated container may not join a network with a route out: refused before create.
    let name = unique("routed");
    let mut s = spec(&name, Tier::Isolated, &["sleep", "60"]);
    s.networks = vec![NetworkAttachment {
        network: open.clone(),
        aliases: vec![],
    }];
    let e = rt.block_on(p.create(&s)).unwrap_err();
    assert_eq!(e.code().as_str(), "policy_denied", "{e}");
    assert!(rt
        .block_on(p.list("io.perry-sandbox.test", &name))
        .unwrap()
        .is_empty());

    // A network this backend saw internal, removed and made again with a route out under
    // the same name: what it saw before is forgotten, and the isolated container is refused.
    let swap = unique("swap");
    for internal in [true, false] {
        rt.block_on(p.network_create(&NetworkSpec {
            name: swap.clone(),
            internal,
            labels: labelled(&front),
        }))
        .unwrap();
        let mut s = spec(&unique("swapped"), Tier::Isolated, &["sleep", "60"]);
        s.networks = vec![NetworkAttachment {
            network: swap.clone(),
            aliases: vec![],
        }];
        match rt.block_on(p.create(&s)) {
            Ok(id) if internal => rt.block_on(p.remove(&id, true)).unwrap(),
            Ok(_) => panic!("joined a network with a route out"),
            Err(e) if !internal => assert_eq!(e.code().as_str(), "policy_denied", "{e}"),
            Err(e) => panic!("{e}"),
        }
        rt.block_on(p.network_remove(&swap)).unwrap();
    }

    let name = unique("db");
    let mut s = spec(&name, Tier::Isolated, &["sleep", "60"]);
    s.networks = vec![NetworkAttachment {
        network: front.clone(),
        aliases: vec!["db-front".into()],
    }];
    let db = started(&p, &s);
    rt.block_on(p.network_connect(&back, &db, &["db".to_string()]))
        .unwrap();
    let info = rt.block_on(p.inspect(&db)).unwrap();
    assert!(
        info.aliases[&front].contains(&"db-front".to_string()),
        "{info:?}"
    );
    assert!(info.aliases[&back].contains(&"db".to_string()), "{info:?}");
    let ip = info.ips[&back].clone();
    assert!(!ip.is_empty() && !info.ips[&front].is_empty(), "{info:?}");
    // Another container on `back` finds it by the alias.
    // (tier default: the isolated tier's seccomp profile is still the native one, AF_UNIX
    // only, so a DNS query cannot leave an isolated container yet.)
    let mut client = spec(
        &unique("client"),
        Tier::Default,
        &["busybox", "nslookup", "db"],
    );
    client.networks = vec![NetworkAttachment {
        network: back.clone(),
        aliases: vec![],
    }];
    let out = rt.block_on(p.run(&client)).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&ip),
        "db is {ip}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Failure paths: a missing container, a removed network.
    let e = rt
        .block_on(p.network_connect(&back, "perrytest-no-such-container", &[]))
        .unwrap_err();
    assert!(
        matches!(&e, BackendError::NotFound { kind: "container", name, .. } if name == "perrytest-no-such-container"),
        "{e:?}"
    );
    rt.block_on(p.remove(&db, true)).unwrap();
    for n in [&front, &back, &open] {
        rt.block_on(p.network_remove(n)).unwrap();
    }
    let e = rt.block_on(p.network_remove(&back)).unwrap_err();
    assert_eq!(e.code().as_str(), "not_found", "{e}");
    let e = rt.block_on(p.run(&client)).map(drop).unwrap_err();
    assert_eq!(e.code().as_str(), "not_found", "{e}");
    assert!(rt
        .block_on(p.network_list("io.perry-sandbox.test", &front))
        .unwrap()
        .is_empty());
}

#[test]
fn volumes_are_listed_by_label_and_stay_writable_under_a_read_only_root() {
    let rt = rt();
    let p = podman();
    rt.block_on(p.pull(&PinnedImage::from_verified(&world().image)))
        .unwrap();
    let (a, b) = (unique("vola"), unique("volb"));
    for v in [&a, &b] {
        rt.block_on(p.volume_create(&VolumeSpec {
            name: v.clone(),
            labels: labelled(v),
        }))
        .unwrap();
    }
    assert_eq!(
        rt.block_on(p.volume_list("io.perry-sandbox.test", &a))
            .unwrap(),
        vec![a.clone()]
    );
    let info = rt.block_on(p.volume_inspect(&b)).unwrap();
    assert_eq!(info.labels.get("io.perry-sandbox.test"), Some(&b));
    // A named volume is an explicit grant: writable even when the root is read-only, and
    // what one container writes the next one reads.
    let mount = Mount::Volume {
        name: a.clone(),
        target: "/data".into(),
        read_only: false,
    };
    let mut w = spec(
        &unique("writer"),
        Tier::Hardened,
        &["sh", "-c", "echo kept > /data/f"],
    );
    w.mounts = vec![mount.clone()];
    // The volume is root-owned; the hardened user is 65534.
    w.hardening.user = None;
    let out = rt.block_on(p.run(&w)).unwrap();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let mut r = spec(&unique("reader"), Tier::Hardened, &["cat", "/data/f"]);
    r.mounts = vec![mount];
    assert_eq!(
        String::from_utf8_lossy(&rt.block_on(p.run(&r)).unwrap().stdout),
        "kept\n"
    );
    for v in [&a, &b] {
        rt.block_on(p.volume_remove(v)).unwrap();
    }
    for e in [
        rt.block_on(p.volume_remove(&a)).unwrap_err(),
        rt.block_on(p.volume_inspect(&b)).map(drop).unwrap_err(),
    ] {
        assert_eq!(e.code().as_str(), "not_found", "{e}");
    }
}

#[test]
fn a_missing_cli_or_a_daemon_that_does_not_answer_is_backend_unavailable() {
    let rt = rt();
    let ghost = DockerProtocol::new("ghost", Dialect::Docker, "perry-no-such-cli");
    let e = rt.block_on(ghost.list("a", "b")).unwrap_err();
    assert_eq!(e.code().as_str(), "backend_unavailable", "{e}");
    assert_eq!(e.status(), 503);
    assert!(e.to_string().contains("perry-no-such-cli"), "{e}");
    // The docker CLI is installed here, its daemon is not.
    let docker = DockerProtocol::new("docker", Dialect::Docker, "docker");
    let e = rt.block_on(docker.list("a", "b")).unwrap_err();
    assert_eq!(e.code().as_str(), "backend_unavailable", "{e}");
    let a = rt.block_on(docker.availability());
    assert!(!a.available, "{a:?}");
    assert!(!a.reason.is_empty());
    // podman answers, with its version.
    let p = podman();
    let a = rt.block_on(p.availability());
    assert!(a.available, "{a:?}");
    assert!(rt.block_on(p.version()).unwrap().contains("podman"));
}

/// `stop_many` (what each level of `down` is): every running container's init gets its own
/// stop signal, one that ignores it is killed after the timeout, and a pid the backend reports
/// that is not the container's init is never signalled — the container is then stopped by the
/// backend.
#[test]
fn stop_many_signals_each_init_and_never_a_process_it_cannot_prove_is_the_container() {
    let rt = rt();
    let p = podman();
    rt.block_on(p.pull(&PinnedImage::from_verified(&world().image)))
        .unwrap();
    let run = |label: &str, script: &str| {
        let name = unique(label);
        let mut s = spec(&name, Tier::Isolated, &["sh", "-c", script]);
        // What `stop_many(…, None)` gives each before SIGKILL, read back from inspect.
        s.stop_timeout = Some(Duration::from_millis(700));
        let id = started(&p, &s);
        // Running, with its traps set, before it is stopped.
        for _ in 0..100 {
            let i = rt.block_on(p.inspect(&id)).unwrap();
            if i.status == ContainerStatus::Running && i.pid.is_some() {
                std::thread::sleep(Duration::from_millis(200));
                return rt.block_on(p.inspect(&id)).unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{name} never ran");
    };
    let term = run("term", "trap 'exit 3' TERM; sleep 60 & wait");
    let mut usr1 = run(
        "usr1",
        "trap 'exit 5' USR1; trap 'exit 6' TERM; sleep 60 & wait",
    );
    usr1.stop_signal = Some("SIGUSR1".into());
    let stubborn = run("stubborn", "trap '' TERM; while :; do sleep 1; done");
    // The backend says its pid is one of ours: a process of this host, not the container.
    let mut decoy = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let mut lied = run("lied", "trap 'exit 4' TERM; sleep 60 & wait");
    lied.pid = Some(decoy.id());

    let all = [term, usr1, stubborn, lied];
    let t = std::time::Instant::now();
    assert!(all
        .iter()
        .all(|c| c.stop_timeout == Some(Duration::from_secs(1))));
    rt.block_on(p.stop_many(&all, None)).unwrap();
    let took = t.elapsed();
    assert!(
        decoy.try_wait().unwrap().is_none(),
        "a process that is not the container's init was signalled"
    );
    decoy.kill().unwrap();
    let _ = decoy.wait();
    let codes: Vec<i32> = all
        .iter()
        .map(|c| rt.block_on(p.wait(&c.id)).unwrap())
        .collect();
    assert_eq!(
        codes,
        [3, 5, 137, 4],
        "TERM, its own USR1, KILL, TERM by podman"
    );
    assert!(
        took >= Duration::from_secs(1),
        "killed before its timeout: {took:?}"
    );
    let ids: Vec<String> = all.iter().map(|c| c.id.clone()).collect();
    rt.block_on(p.remove_many(&ids)).unwrap();
    // Removing what is gone already is no error.
    rt.block_on(p.remove_many(&ids)).unwrap();
    for id in &ids {
        let e = rt.block_on(p.inspect(id)).unwrap_err();
        assert_eq!(e.code().as_str(), "not_found", "{e}");
    }
}

#[test]
fn published_ports_answer_on_the_host_and_are_inspected() {
    let rt = rt();
    let p = podman();
    assert_eq!(p.name(), "podman");
    rt.block_on(p.pull(&PinnedImage::from_verified(&world().image)))
        .unwrap();
    // A free port on the host's loopback.
    let host_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let name = unique("ports");
    let mut s = spec(
        &name,
        Tier::Default,
        &[
            "sh",
            "-c",
            "mkdir -p /tmp/www && echo hello-port > /tmp/www/index.html && exec busybox httpd -f -p 8080 -h /tmp/www",
        ],
    );
    s.ports = vec![PortMapping {
        host_ip: "127.0.0.1".into(),
        host_port,
        container_port: 8080,
        protocol: "tcp".into(),
    }];
    let id = started(&p, &s);
    let info = rt.block_on(p.inspect(&id)).unwrap();
    assert_eq!(info.ports, s.ports, "{info:?}");
    // A real connection to the host port reaches the server in the container.
    let get = || -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", host_port))?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
        let mut body = String::new();
        c.read_to_string(&mut body)?;
        Ok(body)
    };
    let mut answer = get();
    for _ in 0..100 {
        if answer.as_ref().is_ok_and(|b| b.contains("hello-port")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        answer = get();
    }
    let body = answer.unwrap();
    assert!(
        body.starts_with("HTTP/1.") && body.contains("hello-port"),
        "{body}"
    );
    // inspect_many: one call for several, and one that does not exist is left out.
    let many = rt
        .block_on(p.inspect_many(&[id.clone(), "perrytest-no-such-container".into()]))
        .unwrap();
    assert_eq!(many.len(), 1, "{many:?}");
    assert_eq!(many[0].name, name);
    assert_eq!(many[0].ports, s.ports);
    rt.block_on(p.remove(&id, true)).unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", host_port)).is_err());
}

#[test]
fn untrusted_starts_a_glibc_program_under_gvisor_non_root_read_only_and_offline() {
    let rt = rt();
    let p = podman();
    // GNU id and touch with their libc and loader (dynamically linked), busybox for the rest.
    let image = common::verified(
        "backends/glibc",
        "v1",
        &perry_testworld::HostImage::new("backends-glibc")
            .binary("/usr/bin/id")
            .binary("/usr/bin/touch")
            .busybox()
            .build(),
    );
    assert!(
        !perry_testworld::shared_libraries(std::path::Path::new("/usr/bin/id")).is_empty(),
        "/usr/bin/id is not dynamically linked here"
    );
    rt.block_on(p.pull(&image)).unwrap();
    let s = common::spec_for(
        &unique("glibc"),
        image,
        Tier::Untrusted,
        &[
            "/bin/sh",
            "-c",
            "/usr/bin/id --version | head -1; echo uid=$(/usr/bin/id -u); \
             /usr/bin/touch /x 2>/dev/null && echo wrote-root || echo ro-root; \
             nc -w1 10.0.0.1 80 </dev/null 2>/dev/null && echo net || echo no-net; \
             cat /proc/self/status /proc/version; echo nproc=$(ulimit -u); \
             (for i in $(seq 1 80); do sleep 5 & done; echo unbounded) 2>&1 | tail -1",
        ],
    );
    let out = rt.block_on(p.run(&s)).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.exit_code,
        0,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("id (GNU coreutils)"),
        "glibc's id ran: {text}"
    );
    assert!(text.contains("uid=65534\n"), "non-root: {text}");
    assert!(
        text.contains("ro-root") && !text.contains("wrote-root"),
        "{text}"
    );
    assert!(text.contains("no-net"), "{text}");
    assert_eq!(status_field(&text, "Seccomp"), "2", "{text}");
    let host = std::fs::read_to_string("/proc/version").unwrap();
    assert!(
        !text.contains(host.trim()),
        "ran on the host kernel: {text}"
    );
    // The tier's pids limit is gVisor's own (the host's bounds the sandbox): the 80th
    // process is refused inside, and the sandbox survives to say so.
    assert!(text.contains("nproc=64\n"), "{text}");
    assert!(
        text.contains("can't fork") && !text.contains("unbounded"),
        "{text}"
    );
}

/// The host processes whose command line contains `marker`, with their `comm` and parent pid.
fn host_processes_with(marker: &str) -> Vec<(u32, String, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(marker) {
            continue;
        }
        found.push((pid, comm_of(pid), ppid_of(pid)));
    }
    found
}

fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn ppid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status_value(&status, "PPid")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_plain_exec_runs_through_runc_itself_confined_exactly_as_the_container_s_init() {
    let rt = rt();
    let p = podman();
    rt.block_on(p.pull(&PinnedImage::from_verified(&world().image)))
        .unwrap();
    // The default tier: a root user with a reduced capability set, so a probe given the full
    // set (or none of the container's seccomp filter) differs from the init.
    let name = unique("direct");
    started(&p, &spec(&name, Tier::Default, &["sleep", "60"]));
    let marker = format!("marker-{name}");
    let facts = "grep -E '^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp|Seccomp_filters):' \"$p/status\"; \
                 cat \"$p/cgroup\"; for n in \"$p\"/ns/*; do echo \"${n##*/} $(readlink \"$n\")\"; done";
    let script = format!(
        "sleep 1 # {marker}\nfor p in /proc/1 /proc/self; do echo \"== $p\"; {facts}; done"
    );
    // Who runs the command, seen from the host while it sleeps: runc, started by this
    // process — not podman's conmon.
    let watcher = {
        let marker = marker.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                let procs = host_processes_with(&marker);
                if let Some((_, _, ppid)) = procs.iter().find(|(_, comm, _)| comm == "sh") {
                    return Some((comm_of(*ppid), ppid_of(*ppid)));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        })
    };
    let out = rt
        .block_on(p.exec(
            &name,
            &ExecSpec {
                cmd: vec!["sh".into(), "-c".into(), script],
                ..ExecSpec::default()
            },
        ))
        .unwrap();
    let parent = watcher.join().unwrap();
    assert_eq!(
        parent,
        Some(("runc".to_string(), std::process::id())),
        "the probe's parent and grandparent"
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.exit_code,
        0,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (init, probe) = text
        .strip_prefix("== /proc/1\n")
        .and_then(|t| t.split_once("== /proc/self\n"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(init.contains("CapBnd:") && init.contains("mnt:["), "{init}");
    // The same user, capabilities, no_new_privs, seccomp filter, cgroup and namespaces.
    assert_eq!(probe, init);
    assert_eq!(status_field(probe, "Seccomp"), "2", "{probe}");
    assert_eq!(status_field(probe, "NoNewPrivs"), "1", "{probe}");
    assert_ne!(status_field(probe, "CapBnd"), "000001ffffffffff", "{probe}");
    rt.block_on(p.remove_many(std::slice::from_ref(&name)))
        .unwrap();
}

#[test]
fn a_direct_exec_never_reaches_a_replaced_container_and_ends_a_command_it_gives_up_on() {
    let rt = rt();
    let p = podman();
    rt.block_on(p.pull(&PinnedImage::from_verified(&world().image)))
        .unwrap();
    let name = unique("replaced");
    started(&p, &spec(&name, Tier::Isolated, &["sleep", "60"]));
    rt.block_on(p.remove_many(std::slice::from_ref(&name)))
        .unwrap();
    // Another driver (another process, as far as `p` knows) makes a new container under the
    // name `p` remembers with the old id: the exec reaches the new one, through podman.
    let s = spec(
        &name,
        Tier::Isolated,
        &["sh", "-c", "echo second > /tmp/which; exec sleep 60"],
    );
    started(&podman(), &s);
    let which = ExecSpec {
        cmd: vec!["sh".into(), "-c".into(), "sleep 0.2; cat /tmp/which".into()],
        ..ExecSpec::default()
    };
    let out = rt.block_on(p.exec(&name, &which)).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "second\n");

    // A command still running when the call's timeout expires is ended, not left behind.
    let id = rt.block_on(p.inspect(&name)).unwrap().id;
    let short = p.clone().with_timeout(Duration::from_secs(1));
    let secs = format!("37.{}", std::process::id());
    let e = rt
        .block_on(short.exec(
            &id,
            &ExecSpec {
                cmd: vec!["sleep".into(), secs.clone()],
                ..ExecSpec::default()
            },
        ))
        .unwrap_err();
    assert!(matches!(e, BackendError::Timeout { .. }), "{e}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let left = |_: ()| {
        host_processes_with(&secs)
            .into_iter()
            .filter(|(_, comm, _)| comm == "sleep")
            .count()
    };
    while left(()) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        left(()),
        0,
        "the timed-out command still runs in the container"
    );
    rt.block_on(p.remove_many(std::slice::from_ref(&name)))
        .unwrap();
}
