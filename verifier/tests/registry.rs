//! RegistryClient against a real docker-registry on loopback: resolution hashes the bytes
//! itself, picks platforms out of indexes, enforces limits, authenticates, and refuses plain
//! HTTP unless the loopback host is marked insecure.

use perry_policies::{Config, Digest, ImageRef};
use perry_testworld::{Registry, TinyImage, TinyIndex};
use perry_verifier::registry::{Platform, RegistryClient, RegistryError};

fn config(toml: &str) -> Config {
    Config::from_bytes(toml.as_bytes(), "test.toml".as_ref()).unwrap_or_else(|e| panic!("{e}"))
}

fn insecure(reg_host: &str) -> Config {
    config(&format!("[registries.\"{reg_host}\"]\ninsecure = true\n"))
}

fn img(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

fn digest(s: &str) -> Digest {
    Digest::parse(s).unwrap()
}

#[tokio::test]
async fn resolves_a_tag_to_the_digest_of_the_bytes() {
    let reg = Registry::start();
    let image = TinyImage::busybox_marked("amd64", "resolve");
    let pushed = reg.push_image("demo/app", "v1", &image);
    let client = RegistryClient::new(&insecure(&reg.host()));

    let r = client
        .resolve(
            &img(&format!("{}/demo/app:v1", reg.host())),
            &Platform::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.digest.as_str(), pushed.digest);
    assert_eq!(r.platform_digest, None);
    assert_eq!(r.media_type, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(r.manifest, image.manifest);
    assert_eq!(r.reference.tag(), Some("v1"));

    // By digest: same answer, no tag involved.
    let by_digest = img(&format!("{}/demo/app@{}", reg.host(), pushed.digest));
    let r2 = client
        .resolve(&by_digest, &Platform::default())
        .await
        .unwrap();
    assert_eq!(r2.digest, r.digest);
    // Tag and digest both given: the digest governs, even when the tag has moved elsewhere.
    let other = reg.push_image(
        "demo/app",
        "v2",
        &TinyImage::busybox_marked("amd64", "other"),
    );
    reg.move_tag("demo/app", "v1", &other.digest);
    let both = img(&format!("{}/demo/app:v1@{}", reg.host(), pushed.digest));
    let r3 = client.resolve(&both, &Platform::default()).await.unwrap();
    assert_eq!(r3.digest.as_str(), pushed.digest);
}

#[tokio::test]
async fn picks_the_platform_out_of_an_index() {
    let reg = Registry::start();
    let index = TinyIndex::two_platform("multi");
    let pushed = reg.push_index("demo/multi", "v1", &index);
    let client = RegistryClient::new(&insecure(&reg.host()));
    let image = img(&format!("{}/demo/multi:v1", reg.host()));

    let r = client.resolve(&image, &Platform::default()).await.unwrap();
    assert_eq!(
        r.digest.as_str(),
        pushed.digest,
        "top-level digest is the index's"
    );
    assert_eq!(r.media_type, "application/vnd.oci.image.index.v1+json");
    assert_eq!(
        r.platform_digest.as_ref().unwrap().as_str(),
        pushed.platform("amd64")
    );
    assert_eq!(
        r.manifest,
        index.image("amd64").manifest,
        "platform manifest pinned"
    );
    assert_eq!(r.image_manifest_digest().as_str(), pushed.platform("amd64"));

    let arm: Platform = "linux/arm64".parse().unwrap();
    let r = client.resolve(&image, &arm).await.unwrap();
    assert_eq!(
        r.platform_digest.as_ref().unwrap().as_str(),
        pushed.platform("arm64")
    );

    let s390: Platform = "linux/s390x".parse().unwrap();
    let e = client.resolve(&image, &s390).await.unwrap_err();
    assert!(matches!(e, RegistryError::NoPlatform { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("linux/s390x") && msg.contains("linux/amd64, linux/arm64"),
        "{msg}"
    );
    assert!(msg.contains(&reg.host()), "{msg}");
}

#[tokio::test]
async fn missing_things_are_not_found_naming_the_registry() {
    let reg = Registry::start();
    reg.push_image("demo/app", "v1", &TinyImage::busybox("amd64"));
    let client = RegistryClient::new(&insecure(&reg.host()));

    let e = client
        .resolve(
            &img(&format!("{}/demo/app:nope", reg.host())),
            &Platform::default(),
        )
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&reg.host()) && msg.contains("demo/app:nope"),
        "{msg}"
    );

    let absent = digest(&format!("sha256:{}", "0".repeat(64)));
    let e = client
        .fetch_manifest(&img(&format!("{}/demo/app", reg.host())), &absent)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    let e = client
        .resolve(
            &img(&format!("{}/no/such:v1", reg.host())),
            &Platform::default(),
        )
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}

#[tokio::test]
async fn blobs_are_hashed_and_limited() {
    let reg = Registry::start();
    let image = TinyImage::busybox("amd64");
    reg.push_image("demo/app", "v1", &image);
    let client = RegistryClient::new(&insecure(&reg.host()));
    let repo = img(&format!("{}/demo/app", reg.host()));
    let layer = digest(&image.digest_of_layer());

    let bytes = client.fetch_blob(&repo, &layer, 64 << 20).await.unwrap();
    assert_eq!(bytes, image.layer);

    let e = client
        .fetch_blob(&repo, &layer, (image.layer.len() - 1) as u64)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::TooLarge { .. }), "{e:?}");
    assert!(e.to_string().contains(&reg.host()));
}

#[tokio::test]
async fn plain_http_is_not_used_unless_the_loopback_host_is_marked_insecure() {
    let reg = Registry::start();
    reg.push_image("demo/app", "v1", &TinyImage::busybox("amd64"));
    // No [registries] entry: HTTPS is spoken to a plain-HTTP registry, which fails.
    let client = RegistryClient::new(&config(""));
    let e = client
        .resolve(
            &img(&format!("{}/demo/app:v1", reg.host())),
            &Platform::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Transport { .. }), "{e:?}");
    assert!(e.to_string().contains(&reg.host()), "{e}");
    // An entry without `insecure`: same.
    let client = RegistryClient::new(&config(&format!(
        "[registries.\"{}\"]\nusername = \"u\"\npassword = \"p\"\n",
        reg.host()
    )));
    let e = client
        .resolve(
            &img(&format!("{}/demo/app:v1", reg.host())),
            &Platform::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Transport { .. }), "{e:?}");
}

#[tokio::test]
async fn basic_auth_from_config_and_docker_config_json() {
    const PASSWORD: &str = "correct-horse-battery";
    let reg = Registry::start_with_basic_auth("alice", PASSWORD);
    let pushed = reg.push_image("demo/private", "v1", &TinyImage::busybox("amd64"));
    let image = img(&format!("{}/demo/private:v1", reg.host()));
    let host = reg.host();

    // Anonymous: refused, with a hint about where credentials go.
    let e = RegistryClient::new(&insecure(&host))
        .resolve(&image, &Platform::default())
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e:?}");
    assert!(
        e.to_string().contains(&format!("[registries.\"{host}\"]")),
        "{e}"
    );

    // Inline username/password.
    let ok = RegistryClient::new(&config(&format!(
        "[registries.\"{host}\"]\ninsecure = true\nusername = \"alice\"\npassword = \"{PASSWORD}\"\n"
    )));
    let r = ok.resolve(&image, &Platform::default()).await.unwrap();
    assert_eq!(r.digest.as_str(), pushed.digest);

    // Wrong password: refused, and the message never contains a password.
    let bad = RegistryClient::new(&config(&format!(
        "[registries.\"{host}\"]\ninsecure = true\nusername = \"alice\"\npassword = \"wrong-{PASSWORD}\"\n"
    )));
    let e = bad.resolve(&image, &Platform::default()).await.unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e:?}");
    assert!(!e.to_string().contains(PASSWORD) && !format!("{e:?}").contains(PASSWORD));
    assert!(!format!("{bad:?}").contains(PASSWORD));

    // A docker config.json (mode 0600) with `auth` = base64(user:password).
    use base64::Engine as _;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let dc = dir.path().join("config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}"));
    std::fs::write(
        &dc,
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    std::fs::set_permissions(&dc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = format!(
        "[registries.\"{host}\"]\ninsecure = true\ndocker_config = \"{}\"\n",
        dc.display()
    );
    let r = RegistryClient::new(&config(&cfg))
        .resolve(&image, &Platform::default())
        .await
        .unwrap();
    assert_eq!(r.digest.as_str(), pushed.digest);

    // The same file readable by others is refused before any request is made.
    std::fs::set_permissions(&dc, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = RegistryClient::new(&config(&cfg))
        .resolve(&image, &Platform::default())
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Credentials { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("config.json") && msg.contains("644"), "{msg}");
    assert!(!msg.contains(&auth) && !msg.contains(PASSWORD), "{msg}");
}

/// The vendored OCI client (`third_party/oci-client`, patch 3) refuses to build a client that
/// would accept invalid certificates, rather than passing the request on to the HTTP library:
/// there is no way around TLS verification, not even one nothing in perry-sandbox uses.
#[test]
fn the_http_client_refuses_to_skip_certificate_verification() {
    use oci_client::client::{ClientConfig, ClientProtocol};
    let insecure = ClientConfig {
        protocol: ClientProtocol::Https,
        accept_invalid_certificates: true,
        ..Default::default()
    };
    let err = oci_client::Client::try_from(insecure)
        .err()
        .expect("a client accepting invalid certificates was built");
    assert!(
        err.to_string().contains("accept_invalid_certificates"),
        "{err}"
    );
    // The ordinary configuration still builds.
    assert!(oci_client::Client::try_from(ClientConfig::default()).is_ok());
}
