//! Properties of configuration parsing: never panic, and serialise → parse is the identity.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use perry_policies::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Config::from_bytes(&bytes, Path::new("fuzz.toml"));
    }

    #[test]
    fn toml_shaped_text_never_panics(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("[sandbox]".to_string()),
                Just("[[trust.policy]]".to_string()),
                Just("[shellCapabilities.x]".to_string()),
                Just("[tiers.hardened]".to_string()),
                Just("[registries.\"127.0.0.1:5000\"]".to_string()),
                "[a-z_]{1,12} = \"[ -~]{0,12}\"",
                "[a-z_]{1,12} = [0-9]{1,6}",
                "[a-z_]{1,12} = \\[\"[a-z/.*:]{0,16}\"\\]",
                "[a-z_]{1,12} = \\{ [a-z_]{1,8} = \"[ -~]{0,8}\" \\}",
                "[ -~]{0,30}",
            ],
            0..12,
        )
    ) {
        let _ = Config::from_bytes(lines.join("\n").as_bytes(), Path::new("fuzz.toml"));
    }

    #[test]
    fn serialise_then_parse_is_identity(cfg in arb_config()) {
        prop_assert!(cfg.validate().is_empty(), "generator made an invalid config: {:?}", cfg.validate());
        let text = toml::to_string(&cfg).unwrap();
        let back = Config::from_bytes(text.as_bytes(), Path::new("rt.toml"))
            .map_err(|e| TestCaseError::fail(format!("{e}\n---\n{text}")))?;
        prop_assert_eq!(back, cfg);
    }
}

fn arb_tier_at_least_hardened() -> impl Strategy<Value = Tier> {
    prop_oneof![Just(Tier::Hardened), Just(Tier::Untrusted)]
}

fn arb_rule() -> impl Strategy<Value = TrustRule> {
    (
        proptest::option::of("[a-z]{1,8}"),
        proptest::collection::vec(
            prop_oneof![
                Just("cgr.dev/chainguard/**"),
                Just("ghcr.io/*/tools"),
                Just("127.0.0.1:5000/demo/app")
            ],
            1..3,
        ),
        proptest::collection::vec(
            (
                "https://[a-z]{1,8}\\.example",
                proptest::bool::ANY,
                "[a-z@.]{1,12}",
            ),
            1..3,
        ),
    )
        .prop_map(|(name, globs, ids)| TrustRule {
            name,
            images: globs
                .into_iter()
                .map(|g| ImageGlob::new(g).unwrap())
                .collect(),
            keyless: ids
                .into_iter()
                .map(|(issuer, exact, s)| KeylessAuthority {
                    issuer,
                    subject: exact.then(|| s.clone()),
                    subject_regex: (!exact)
                        .then(|| Pattern::new(&format!("^{}$", regex_escape(&s))).unwrap()),
                })
                .collect(),
            keys: vec![],
            tier: None,
        })
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

fn arb_capability() -> impl Strategy<Value = ShellCapability> {
    (
        proptest::collection::vec("[a-z]{1,6}", 1..4),
        0usize..3,
        proptest::collection::vec("-[a-z]", 0..3),
        arb_tier_at_least_hardened(),
        proptest::option::of(1u64..300),
        proptest::bool::ANY,
        proptest::option::of(prop_oneof![
            Just("cgr.dev/chainguard/git:latest"),
            Just("127.0.0.1:5000/demo/app:v1")
        ]),
    )
        .prop_map(
            |(command, max, deny, tier, timeout, ro, image)| ShellCapability {
                description: Some("generated".into()),
                command,
                args: ArgRules {
                    max,
                    pattern: Some(Pattern::new("[a-z0-9-]+").unwrap()),
                    positions: vec![],
                    deny,
                },
                image: image.map(|i| ImageRef::parse(i).unwrap()),
                tier,
                mounts: vec![MountSpec {
                    source: "{workspace}".into(),
                    target: "/work".into(),
                    read_only: ro,
                }],
                env: EnvSpec {
                    pass: vec!["TERM".into()],
                    set: BTreeMap::from([("HOME".into(), "/tmp".into())]),
                },
                workdir: Some("/work".into()),
                timeout: timeout.map(HumanDuration::from_secs),
                memory: Some(ByteSize::mib(64)),
                pids: Some(16),
                output_limit: None,
                network: false,
            },
        )
}

fn arb_config() -> impl Strategy<Value = Config> {
    (
        "/[a-z]{1,8}(/[a-z]{1,8}){0,2}",
        arb_tier_at_least_hardened(),
        1u32..1_000_000,
        proptest::collection::vec(arb_rule(), 0..3),
        proptest::collection::btree_map("[a-z][a-z0-9-]{0,8}", arb_capability(), 0..3),
        proptest::option::of(16u32..=256),
        proptest::bool::ANY,
        1u64..5000,
    )
        .prop_map(|(dir, tier, uid, rules, caps, pids, insecure, every)| {
            let mut cfg = Config::default();
            cfg.sandbox.state_dir = PathBuf::from(&dir);
            cfg.sandbox.default_tier = tier;
            cfg.sandbox.uid_range = UidRange {
                start: uid,
                count: 1000,
            };
            cfg.sandbox.workspace_roots = vec![PathBuf::from(&dir).join("ws")];
            cfg.trust.rules = rules;
            cfg.trust.trusted_root =
                TrustedRootSource::Path(PathBuf::from(&dir).join("trusted_root.json"));
            cfg.capability_images = caps
                .keys()
                .take(1)
                .map(|k| {
                    (
                        k.clone(),
                        ImageRef::parse("cgr.dev/chainguard/jq:latest").unwrap(),
                    )
                })
                .collect();
            cfg.capabilities = caps;
            cfg.registries.insert(
                "127.0.0.1:5000".into(),
                RegistryConfig {
                    insecure,
                    ..Default::default()
                },
            );
            cfg.registries.insert(
                "ghcr.io".into(),
                RegistryConfig {
                    docker_config: Some(PathBuf::from("/root/.docker/config.json")),
                    ..Default::default()
                },
            );
            cfg.tiers.insert(
                Tier::Hardened,
                TierOverride {
                    pids,
                    deny_syscalls: vec!["io_uring_setup".into()],
                    ..Default::default()
                },
            );
            cfg.service.allowed_uids = vec![uid];
            cfg.audit.checkpoint_every = every;
            cfg.audit.dir = Some(PathBuf::from(&dir).join("audit"));
            cfg
        })
}
