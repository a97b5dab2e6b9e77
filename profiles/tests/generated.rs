//! The committed OCI exports in `profiles/generated/` must be exactly what the generator
//! produces: a reviewer reads and diffs those files, and operators hand them to podman/docker.
//! If this test fails, regenerate them and review the diff:
//!
//! ```sh
//! PERRY_REGENERATE=1 cargo test -p perry-profiles --test generated
//! # or, one tier at a time:
//! perry-sandbox profiles export --tier hardened --format oci > profiles/generated/hardened.json
//! ```

use std::path::{Path, PathBuf};

use perry_policies::Tier;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("generated")
}

/// temp + fsync + rename, so an interrupted regeneration never leaves a torn file.
fn write_atomically(path: &Path, text: &str) {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn committed_exports_match_the_generator() {
    let regenerate = std::env::var_os("PERRY_REGENERATE").is_some();
    let mut stale = Vec::new();
    for tier in Tier::ALL {
        let want = perry_profiles::export_oci(tier).unwrap();
        let path = dir().join(format!("{tier}.json"));
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            if regenerate {
                write_atomically(&path, &want);
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "out of date (or missing): {}\nregenerate with `PERRY_REGENERATE=1 cargo test -p perry-profiles \
         --test generated` (or `perry-sandbox profiles export --tier T --format oci > \
         profiles/generated/T.json`), then review and commit the diff",
        stale.join(", ")
    );
}

#[test]
fn generated_dir_holds_exactly_the_four_tiers() {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".tmp"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "default.json",
            "hardened.json",
            "isolated.json",
            "untrusted.json"
        ]
    );
}

/// The export keeps the promises that matter to another runtime: unknown calls get ENOSYS,
/// clone3 is never allowed (so it gets ENOSYS too), known-dangerous calls get EPERM, only x86_64.
#[test]
fn exports_keep_the_profile_promises() {
    for tier in Tier::ALL {
        let v: serde_json::Value =
            serde_json::from_str(&perry_profiles::export_oci(tier).unwrap()).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO", "{tier}");
        assert_eq!(v["defaultErrnoRet"], 38, "{tier}");
        assert_eq!(v["architectures"], serde_json::json!(["SCMP_ARCH_X86_64"]));
        let entries = v["syscalls"].as_array().unwrap();
        let named = |n: &'static str| {
            entries
                .iter()
                .filter(move |e| e["names"].as_array().unwrap().iter().any(|x| x == n))
        };
        assert_eq!(
            named("clone3").count(),
            0,
            "{tier}: clone3 must fall to ENOSYS"
        );
        if tier >= Tier::Hardened {
            for n in [
                "mount",
                "unshare",
                "ptrace",
                "keyctl",
                "bpf",
                "io_uring_setup",
            ] {
                let e: Vec<_> = named(n).collect();
                assert_eq!(e.len(), 1, "{tier}: {n}: {e:?}");
                assert_eq!(e[0]["action"], "SCMP_ACT_ERRNO", "{tier}: {n}");
                assert_eq!(e[0]["errnoRet"], 1, "{tier}: {n}");
                assert!(
                    e[0].get("args").is_none(),
                    "{tier}: {n} is refused outright"
                );
            }
        }
        // libseccomp lets an unconditional allow override the conditional EPERM rules of the
        // same call (TIOCSTI went through under podman that way): never emit both.
        for e in entries
            .iter()
            .filter(|e| e["action"] == "SCMP_ACT_ERRNO" && e.get("args").is_some())
        {
            for n in e["names"].as_array().unwrap() {
                let unconditional = entries.iter().any(|a| {
                    a["action"] == "SCMP_ACT_ALLOW"
                        && a.get("args").is_none()
                        && a["names"].as_array().unwrap().contains(n)
                });
                assert!(
                    !unconditional,
                    "{tier}: {n} is allowed unconditionally and refused by argument"
                );
            }
        }
        if tier >= Tier::Isolated {
            // socket: allowed only for AF_UNIX, EPERM for any other family.
            let s: Vec<_> = named("socket").collect();
            let allow: Vec<_> = s
                .iter()
                .filter(|e| e["action"] == "SCMP_ACT_ALLOW")
                .collect();
            assert_eq!(allow.len(), 1, "{tier}: {s:?}");
            assert_eq!(allow[0]["args"][0]["valueTwo"], 1, "{tier}: AF_UNIX only");
        }
    }
}
