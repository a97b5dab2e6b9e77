//! Unit tests of the registry module.

use std::collections::BTreeMap;

use perry_policies::{RegistryConfig, Secret};

use super::client::plain_http_hosts;
use super::credentials::{docker_config_credentials, Credentials};
use super::manifest::ParsedManifest;
use super::platform::IndexPlatform;
use super::*;

#[test]
fn platform_parse_and_display() {
    let p: Platform = "linux/arm64/v8".parse().unwrap();
    assert_eq!(p.to_string(), "linux/arm64/v8");
    assert_eq!(Platform::default().to_string(), "linux/amd64");
    for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "Linux/amd64", ""] {
        assert!(bad.parse::<Platform>().is_err(), "{bad}");
    }
}

#[test]
fn platform_matching() {
    let amd: Platform = "linux/amd64".parse().unwrap();
    let arm8: Platform = "linux/arm64/v8".parse().unwrap();
    let ip = |os: &str, a: &str, v: Option<&str>| IndexPlatform {
        os: os.into(),
        architecture: a.into(),
        variant: v.map(Into::into),
    };
    assert!(amd.matches(&ip("linux", "amd64", None)));
    assert!(!amd.matches(&ip("linux", "arm64", None)));
    assert!(!amd.matches(&ip("windows", "amd64", None)));
    assert!(arm8.matches(&ip("linux", "arm64", None)));
    assert!(!arm8.matches(&ip("linux", "arm64", Some("v7"))));
}

#[test]
fn manifest_sniffing() {
    let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
    assert!(matches!(
        ParsedManifest::parse(idx),
        Ok(ParsedManifest::Index { .. })
    ));
    let img = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;
    assert!(matches!(
        ParsedManifest::parse(img),
        Ok(ParsedManifest::Image { .. })
    ));
    assert!(ParsedManifest::parse(br#"{"schemaVersion":1}"#).is_err());
    assert!(ParsedManifest::parse(b"\xff").is_err());
    assert!(ParsedManifest::parse(br#"{"schemaVersion":2,"mediaType":"text/html"}"#).is_err());
}

#[test]
fn only_loopback_insecure_hosts_get_plain_http() {
    let mut regs = BTreeMap::new();
    regs.insert(
        "127.0.0.1:5000".to_string(),
        RegistryConfig {
            insecure: true,
            ..Default::default()
        },
    );
    regs.insert(
        "registry.example.com".to_string(),
        RegistryConfig {
            insecure: true,
            ..Default::default()
        },
    );
    regs.insert("localhost:6000".to_string(), RegistryConfig::default());
    assert_eq!(plain_http_hosts(&regs), vec!["127.0.0.1:5000".to_string()]);
}

#[test]
fn docker_config_auth_forms() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let mut f = std::fs::File::create(&path).unwrap();
    // "alice:s3cret" base64
    write!(
        f,
        r#"{{"auths":{{"reg.example:5000":{{"auth":"YWxpY2U6czNjcmV0"}},"tok.example":{{"registrytoken":"abc"}}}}}}"#
    )
    .unwrap();
    drop(f);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    match docker_config_credentials(&path, "reg.example:5000").unwrap() {
        Credentials::Basic { username, password } => {
            assert_eq!(username, "alice");
            assert_eq!(password.expose(), "s3cret");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        docker_config_credentials(&path, "tok.example").unwrap(),
        Credentials::Bearer(_)
    ));
    assert!(matches!(
        docker_config_credentials(&path, "other.example").unwrap(),
        Credentials::Anonymous
    ));
    // Readable by others: refused, and the message names the file but not the secret.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = docker_config_credentials(&path, "reg.example:5000").unwrap_err();
    assert!(e.contains("config.json") && e.contains("644"), "{e}");
    assert!(!e.contains("s3cret") && !e.contains("YWxp"), "{e}");
    // A config file the entry points at but that does not exist means no credentials: public
    // images need none (the example configuration names one for cgr.dev).
    assert!(matches!(
        docker_config_credentials(&dir.path().join("absent.json"), "cgr.dev").unwrap(),
        Credentials::Anonymous
    ));
    // A path that exists but cannot be read as a file is still an error.
    assert!(docker_config_credentials(dir.path(), "cgr.dev").is_err());
}

#[test]
fn error_stays_small_enough_to_wrap() {
    // Callers (VerifyError, the runtime's PullError) embed it; clippy's result_large_err
    // fires at 128 bytes.
    assert!(std::mem::size_of::<RegistryError>() <= 80);
    let e = RegistryError::mismatch("h:1", "manifest x", "sha256:a".into(), "sha256:b".into());
    assert_eq!(
        e.to_string(),
        "registry h:1: manifest x: content digest mismatch: expected sha256:a, the bytes served hash to sha256:b"
    );
}

#[test]
fn credentials_debug_is_redacted() {
    let c = Credentials::Basic {
        username: "u".into(),
        password: Secret::new("hunter2".into()),
    };
    assert!(!format!("{c:?}").contains("hunter2"));
}
