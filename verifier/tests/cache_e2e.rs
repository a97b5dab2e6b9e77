//! The verification cache against the real loopback world (docker-registry + sigstore-js):
//! a decision is reused by digest, survives a new process, never outlives a changed policy or
//! root, and a tampered disk entry is re-verified rather than trusted.

use perry_policies::{Config, ImageRef};
use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};
use perry_verifier::registry::Platform;
use perry_verifier::{Verifier, VerifyError};

struct World {
    reg: Registry,
    dir: tempfile::TempDir,
    digest: String,
}

fn world(repo: &str) -> World {
    let reg = Registry::start();
    let p = reg.push_image(repo, "v1", &TinyImage::busybox_marked("amd64", repo));
    SigStack::shared().sign(&reg, repo, &p.digest, &SignOptions::default());
    World {
        reg,
        dir: tempfile::tempdir().unwrap(),
        digest: p.digest,
    }
}

fn config(w: &World, b: ConfigBuilder) -> Config {
    Config::load(&b.write(w.dir.path())).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn pinned_reference_is_served_from_cache_without_the_registry_and_across_processes() {
    let w = world("cache/pinned");
    let cfg = config(&w, ConfigBuilder::new(&w.reg, SigStack::shared()));
    let pinned = ImageRef::parse(&format!("{}/cache/pinned@{}", w.reg.host(), w.digest)).unwrap();
    let tagged = ImageRef::parse(&format!("{}/cache/pinned:v1", w.reg.host())).unwrap();
    let rt = rt();
    let p = Platform::default();
    let v = Verifier::new(&cfg).unwrap();
    let first = rt.block_on(v.verify(&pinned, &p)).unwrap();
    assert!(!first.cache_hit);
    assert_eq!(first.image.digest().to_string(), w.digest);
    let again = rt.block_on(v.verify(&pinned, &p)).unwrap();
    assert!(again.cache_hit);
    assert_eq!(again.image, first.image);

    // A new process (new Verifier, same state dir) reuses the HMAC'd disk entry even with the
    // registry gone; a tag still needs the registry (it may have moved).
    drop(w.reg);
    let v2 = Verifier::new(&cfg).unwrap();
    let hit = rt.block_on(v2.verify(&pinned, &p)).unwrap();
    assert!(hit.cache_hit);
    assert_eq!(hit.image.pinned_reference(), first.image.pinned_reference());
    assert_eq!(hit.image.signer_identity(), first.image.signer_identity());
    assert!(matches!(
        rt.block_on(v2.verify(&tagged, &p)),
        Err(VerifyError::Registry(_))
    ));
}

#[test]
fn a_changed_rule_or_root_is_a_cache_miss_and_is_decided_afresh() {
    let w = world("cache/policy");
    let img = ImageRef::parse(&format!("{}/cache/policy:v1", w.reg.host())).unwrap();
    let rt = rt();
    let p = Platform::default();
    let ok = config(&w, ConfigBuilder::new(&w.reg, SigStack::shared()));
    let v = Verifier::new(&ok).unwrap();
    assert!(!rt.block_on(v.verify(&img, &p)).unwrap().cache_hit);
    assert!(rt.block_on(v.verify(&img, &p)).unwrap().cache_hit);

    // Same state dir, the rule now requires another subject: the cached allow must not apply.
    let strict = config(
        &w,
        ConfigBuilder::new(&w.reg, SigStack::shared())
            .identity(perry_testworld::DEFAULT_ISSUER, "someone-else@example.com"),
    );
    let v = Verifier::new(&strict).unwrap();
    let e = rt.block_on(v.verify(&img, &p)).unwrap_err();
    assert!(
        e.to_string().starts_with("identity mismatch: signed by"),
        "{e}"
    );

    // Another root (a second, independent Sigstore stack): the signature no longer chains.
    let other = SigStack::start();
    let foreign = config(
        &w,
        ConfigBuilder::new(&w.reg, SigStack::shared()).trusted_root(&other.trusted_root()),
    );
    let v = Verifier::new(&foreign).unwrap();
    let e = rt.block_on(v.verify(&img, &p)).unwrap_err();
    assert!(e.is_denial(), "{e}");
    assert!(!matches!(e, VerifyError::CachedDenial { .. }), "{e}");
}

#[test]
fn tampered_disk_entry_is_reverified_not_trusted() {
    let w = world("cache/tamper");
    let cfg = config(&w, ConfigBuilder::new(&w.reg, SigStack::shared()));
    let img = ImageRef::parse(&format!("{}/cache/tamper:v1", w.reg.host())).unwrap();
    let rt = rt();
    let p = Platform::default();
    let v = Verifier::new(&cfg).unwrap();
    let first = rt.block_on(v.verify(&img, &p)).unwrap();
    assert!(!first.cache_hit);
    let dir = v.cache().dir().unwrap().to_path_buf();
    // Flip one byte in every entry's body (the signer identity, say); keep the MAC line.
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "entry") {
            let text = std::fs::read_to_string(&path).unwrap();
            let forged = text.replace("perry-sandbox/demo", "perry-sandbox/evil");
            assert_ne!(forged, text);
            std::fs::write(&path, forged).unwrap();
            n += 1;
        }
    }
    assert!(n >= 1);
    let v2 = Verifier::new(&cfg).unwrap();
    let again = rt.block_on(v2.verify(&img, &p)).unwrap();
    assert!(!again.cache_hit, "a tampered entry must not be served");
    assert_eq!(again.image, first.image);
    // Re-verification rewrote a good entry.
    let v3 = Verifier::new(&cfg).unwrap();
    assert!(rt.block_on(v3.verify(&img, &p)).unwrap().cache_hit);
}
