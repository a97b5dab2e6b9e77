//! Unit tests of loading and validation.

use std::path::Path;

use super::load::line_col;
use super::model::Config;
use crate::{ImageRef, Tier};

#[test]
fn empty_config_is_valid_and_denies_everything() {
    let c = Config::from_bytes(b"", Path::new("x.toml")).unwrap();
    assert!(c.trust.rules.is_empty());
    assert_eq!(c.sandbox.default_tier, Tier::Hardened);
    assert!(c
        .trust
        .rules_for(&ImageRef::parse("busybox").unwrap())
        .is_empty());
}

#[test]
fn line_col_counts_characters() {
    assert_eq!(line_col("a\nbé c", 5), (2, 3));
    assert_eq!(line_col("a\nbé c", 6), (2, 4));
    assert_eq!(line_col("abc", 0), (1, 1));
}

#[test]
fn backends_section_parses_with_per_host_settings() {
    let src = br#"
[backends]
backend = "podman"
mode = "server-first"
order = ["podman", "docker"]

[backends.podman]
runtime = "runc"
extra_args = ["--ulimit", "nofile=1024:1024", "--ulimit=nproc=1024:1024"]
sandbox_runtime = "/usr/bin/runsc"

[backends.lima]
instance = "dev"
"#;
    let c = Config::from_bytes(src, Path::new("x.toml")).unwrap();
    let b = &c.backends;
    assert_eq!(b.backend.as_deref(), Some("podman"));
    assert_eq!(b.mode, Some(crate::BackendMode::ServerFirst));
    assert_eq!(b.settings("podman").runtime.as_deref(), Some("runc"));
    assert_eq!(b.settings("podman").extra_args.len(), 3);
    assert_eq!(b.settings("lima").instance.as_deref(), Some("dev"));
    assert!(b.settings("docker").is_empty());
    // Absent: the default, and not written back out.
    let c = Config::from_bytes(b"", Path::new("x.toml")).unwrap();
    assert!(c.backends.is_default());
}

#[test]
fn backends_section_errors_are_located() {
    let cases: [(&str, &str, &str); 6] = [
        (
            "[backends]\nmode = \"fast\"\n",
            "backends.mode",
            "local-first",
        ),
        (
            "[backends]\nbackend = \"podmn\"\n",
            "backends.backend",
            "unknown backend",
        ),
        (
            "[backends]\norder = [\"podman\", \"podman\"]\n",
            "backends.order[1]",
            "listed twice",
        ),
        (
            "[backends.podman]\nruntim = \"runc\"\n",
            "backends.podman.runtim",
            "unknown key",
        ),
        (
            "[backends.podman]\nextra_args = [\"--ulimit\", \"nofile=1:1\", \"--privileged\"]\n",
            "backends.podman.extra_args[2]",
            "not allowed",
        ),
        (
            "[backends.docker]\nsandbox_runtime = \"/usr/bin/runsc\"\n",
            "backends.docker.sandbox_runtime",
            "only podman",
        ),
    ];
    for (src, path, msg) in cases {
        let e = Config::from_bytes(src.as_bytes(), Path::new("x.toml")).unwrap_err();
        let crate::ConfigError::Invalid { problems, .. } = &e else {
            panic!("{e}");
        };
        let p = &problems[0];
        assert_eq!(p.path.to_string(), path, "{src}: {e}");
        assert!(p.message.contains(msg), "{src}: {}", p.message);
        assert_eq!(p.line, Some(2), "{src}: {e}");
    }
}
