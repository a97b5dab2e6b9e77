//! Every way a configuration can be wrong gets a located, specific message.
//!
//! Each case is a broken perryconfig.toml and the exact `line:column: key.path: message` it must
//! produce; a change that makes a message vaguer, unlocated or misattributed fails here.

use std::path::Path;

use perry_policies::Config;

fn error_of(src: &str) -> String {
    match Config::from_bytes(src.as_bytes(), Path::new("perryconfig.toml")) {
        Ok(_) => panic!("config unexpectedly valid:\n{src}"),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
fn assert_error(src: &str, expected: &str) {
    let got = error_of(src);
    assert!(
        got.contains(expected),
        "config:\n{src}\nexpected to contain:\n  {expected}\ngot:\n  {got}"
    );
}

const CAP: &str = "[shellCapabilities.x]\ncommand = [\"ls\"]\n";

#[test]
fn misspelled_key_names_location_and_suggests() {
    assert_error(
        "[sandbox]\nstate_dirr = \"/x\"\n",
        "perryconfig.toml:2:1: sandbox.state_dirr: unknown key `state_dirr` (valid: state_dir, default_tier, uid_range, workspace_roots, max_layer_size, max_layer_entries), did you mean `state_dir`?",
    );
}

#[test]
fn misspelled_top_level_section() {
    assert_error("[sandbx]\n", "1:2: sandbx: unknown key `sandbx`");
    assert_error("[sandbx]\n", "did you mean `sandbox`?");
}

#[test]
fn misspelled_capability_section_name_is_case_sensitive() {
    assert_error(
        "[shellcapabilities.x]\ncommand=[\"ls\"]\n",
        "did you mean `shellCapabilities`?",
    );
}

#[test]
fn misspelled_nested_inline_key() {
    assert_error(
        &format!("{CAP}args = {{ max = 1, patern = \"x\" }}\n"),
        "3:19: shellCapabilities.x.args.patern: unknown key `patern` (valid: max, pattern, positions, deny), did you mean `pattern`?",
    );
}

#[test]
fn unknown_tier_value() {
    assert_error(
        "[sandbox]\ndefault_tier = \"strict\"\n",
        "2:16: sandbox.default_tier: unknown value `strict` (valid: default, isolated, hardened, untrusted)",
    );
}

#[test]
fn unknown_tier_table() {
    assert_error(
        "[tiers.paranoid]\npids = 1\n",
        "1:2: tiers: unknown value `paranoid` (valid: default, isolated, hardened, untrusted)",
    );
}

#[test]
fn capability_tier_default_is_refused() {
    assert_error(
        &format!("{CAP}tier = \"default\"\n"),
        "3:8: shellCapabilities.x.tier: `default` is looser than `hardened`; capabilities run at tier hardened or stricter",
    );
}

#[test]
fn capability_tier_isolated_is_refused() {
    assert_error(
        &format!("{CAP}tier = \"isolated\"\n"),
        "shellCapabilities.x.tier: `isolated` is looser than `hardened`",
    );
}

#[test]
fn default_tier_looser_than_hardened() {
    assert_error(
        "[sandbox]\ndefault_tier = \"default\"\n",
        "2:16: sandbox.default_tier: `default` is looser than `hardened`",
    );
}

#[test]
fn plain_http_non_loopback_registry() {
    assert_error(
        "[registries.\"example.com:5000\"]\ninsecure = true\n",
        "2:12: registries.\"example.com:5000\".insecure: plain HTTP is only allowed for loopback registries; `example.com:5000` is not loopback",
    );
}

#[test]
fn plain_http_to_lookalike_of_localhost() {
    assert_error(
        "[registries.\"localhost.evil.com\"]\ninsecure = true\n",
        "`localhost.evil.com` is not loopback",
    );
}

#[test]
fn unparseable_duration() {
    assert_error(
        &format!("{CAP}timeout = \"10 parsecs\"\n"),
        "3:11: shellCapabilities.x.timeout: `10 parsecs` has unknown unit `parsecs` (use one of `ms`, `s`, `m`, `h`, `d`)",
    );
}

#[test]
fn duration_without_unit() {
    assert_error(
        &format!("{CAP}timeout = 10\n"),
        "shellCapabilities.x.timeout: `10` needs a unit and quotes",
    );
}

#[test]
fn unparseable_size() {
    assert_error(
        "[tiers.hardened]\nmemory = \"lots\"\n",
        "2:10: tiers.hardened.memory: `lots` has no number",
    );
}

#[test]
fn garbage_bytes() {
    assert_error("\u{0}\u{1}garbage ]]] = = =", "perryconfig.toml:1:");
    let e = Config::from_bytes(b"\xff\xfe[x", Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "p.toml:1:1: the file is not valid UTF-8 text");
}

#[test]
fn invalid_utf8_is_located() {
    let e = Config::from_bytes(b"[sandbox]\nstate_dir = \"/a\xffb\"\n", Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "p.toml:2:16: the file is not valid UTF-8 text");
}

#[test]
fn toml_syntax_error() {
    assert_error("[sandbox\n", "1:9: unclosed table, expected `]`");
}

#[test]
fn wrong_type() {
    assert_error(
        "[sandbox]\nstate_dir = 5\n",
        "2:13: sandbox.state_dir: invalid type: integer `5`, expected path string",
    );
}

#[test]
fn override_that_loosens_a_tier() {
    assert_error(
        "[tiers.hardened]\nmemory = \"2GiB\"\n",
        "2:10: tiers.hardened.memory: `2GiB` would loosen tier `hardened` (built-in memory is 1GiB); overrides may only tighten a tier",
    );
    assert_error(
        "[tiers.untrusted]\nnetwork = true\n",
        "tiers.untrusted.network: `true` would loosen tier `untrusted`",
    );
    assert_error(
        "[tiers.untrusted]\nrequire_landlock = false\n",
        "tiers.untrusted.require_landlock",
    );
}

#[test]
fn glob_without_registry() {
    assert_error(
        "[[trust.policy]]\nimages = [\"busybox\"]\nkeyless = [{ issuer = \"https://i\", subject = \"s\" }]\n",
        "2:10: trust.policy[0].images[0]: image glob `busybox` must start with a registry host",
    );
}

#[test]
fn trust_rule_without_authority() {
    assert_error(
        "[[trust.policy]]\nimages = [\"cgr.dev/**\"]\n",
        "1:1: trust.policy[0]: a trust policy needs at least one authority",
    );
}

#[test]
fn unanchored_subject_regex() {
    assert_error(
        "[[trust.policy]]\nimages = [\"cgr.dev/**\"]\nkeyless = [{ issuer = \"https://i\", subject_regex = \"foo.*\" }]\n",
        "3:52: trust.policy[0].keyless[0].subject_regex: `foo.*` must be anchored: write `^foo.*$`",
    );
}

#[test]
fn subject_and_regex_together() {
    assert_error(
        "[[trust.policy]]\nimages = [\"cgr.dev/**\"]\nkeyless = [{ issuer = \"https://i\", subject = \"a\", subject_regex = \"^a$\" }]\n",
        "trust.policy[0].keyless[0]: give `subject` or `subject_regex`, not both",
    );
}

#[test]
fn issuer_must_be_url() {
    assert_error(
        "[[trust.policy]]\nimages = [\"cgr.dev/**\"]\nkeyless = [{ issuer = \"github\", subject = \"a\" }]\n",
        "trust.policy[0].keyless[0].issuer: `github` is not an issuer URL",
    );
}

#[test]
fn invalid_regex_in_args() {
    assert_error(
        &format!("{CAP}args = {{ max = 1, pattern = \"(\" }}\n"),
        "shellCapabilities.x.args.pattern: invalid regex `(`",
    );
}

#[test]
fn capability_images_for_unknown_capability() {
    assert_error(
        "[shellCapabilities.git-log]\ncommand=[\"git\"]\n[shellCapabilityImages]\ngit-lgo = \"cgr.dev/chainguard/git\"\n",
        "4:11: shellCapabilityImages.git-lgo: no capability named `git-lgo` in [shellCapabilities], did you mean `git-log`?",
    );
}

#[test]
fn invalid_image_reference() {
    assert_error(
        "[shellCapabilities.git-log]\ncommand=[\"git\"]\nimage = \"Cgr.dev/UPPER\"\n",
        "shellCapabilities.git-log.image: invalid repository component `UPPER`",
    );
}

#[test]
fn shell_command_refused() {
    assert_error(
        "[shellCapabilities.x]\ncommand = [\"/bin/sh\", \"-c\", \"ls\"]\n",
        "shellCapabilities.x.command: `sh -c` reintroduces a shell",
    );
}

#[test]
fn empty_command() {
    assert_error(
        "[shellCapabilities.x]\ncommand = []\n",
        "shellCapabilities.x.command: must name a program to run",
    );
}

#[test]
fn network_on_a_tier_that_never_allows_it() {
    assert_error(
        &format!("{CAP}tier = \"untrusted\"\nnetwork = true\n"),
        "shellCapabilities.x.network: tier `untrusted` never allows network",
    );
}

#[test]
fn capability_limit_above_its_tier() {
    assert_error(
        &format!("{CAP}tier = \"untrusted\"\nmemory = \"1GiB\"\n"),
        "shellCapabilities.x.memory: `1GiB` exceeds tier `untrusted`'s memory limit of 512MiB",
    );
}

#[test]
fn mount_escapes() {
    assert_error(
        &format!("{CAP}mounts = [{{ source = \"{{workspace}}/../etc\", target = \"/w\" }}]\n"),
        "shellCapabilities.x.mounts[0].source: `{workspace}/../etc` must be an absolute path or `{workspace}[/sub/dir]`, without `..`",
    );
    assert_error(
        &format!("{CAP}mounts = [{{ source = \"/srv\", target = \"/proc/sys\" }}]\n"),
        "shellCapabilities.x.mounts[0].target: `/proc/sys` must be an absolute path inside the sandbox",
    );
}

#[test]
fn ld_preload_cannot_be_passed() {
    assert_error(
        &format!("{CAP}env = {{ pass = [\"LD_PRELOAD\"] }}\n"),
        "shellCapabilities.x.env.pass[0]: `LD_PRELOAD` changes how programs are loaded",
    );
}

#[test]
fn uid_range_at_root() {
    assert_error(
        "[sandbox]\nuid_range = { start = 0, count = 10 }\n",
        "sandbox.uid_range.start: 0 maps sandboxes to host root",
    );
}

#[test]
fn unreachable_position_rule() {
    assert_error(
        &format!("{CAP}args = {{ max = 1, positions = [{{ one_of = [\"a\"] }}, {{ one_of = [\"b\"] }}] }}\n"),
        "shellCapabilities.x.args.positions[1]: position 1 can never be used: args.max is 1",
    );
}

#[test]
fn bad_capability_name() {
    assert_error(
        "[shellCapabilities.\"Git Log\"]\ncommand = [\"git\"]\n",
        "shellCapabilities.\"Git Log\": capability names are 1-64 of [a-z0-9._-]",
    );
}

#[test]
fn credentials_must_be_complete_and_single() {
    assert_error(
        "[registries.\"ghcr.io\"]\nusername = \"bot\"\n",
        "registries.\"ghcr.io\": `username` and `password` go together",
    );
    assert_error(
        "[registries.\"ghcr.io\"]\ntoken = \"t\"\ndocker_config = \"/x\"\n",
        "registries.\"ghcr.io\": choose one of `docker_config`, `username`+`password` or `token`",
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let e = error_of(&format!(
        "[sandbox]\ndefault_tier = \"isolated\"\n{CAP}tier = \"default\"\n"
    ));
    assert_eq!(e.lines().count(), 2, "{e}");
    assert!(
        e.contains("sandbox.default_tier") && e.contains("shellCapabilities.x.tier"),
        "{e}"
    );
}

#[test]
fn secrets_never_appear_in_errors_or_output() {
    let src = "[registries.\"ghcr.io\"]\nusername = \"bot\"\npassword = \"hunter2-secret\"\n";
    let cfg = Config::from_bytes(src.as_bytes(), Path::new("p.toml")).unwrap();
    assert!(!format!("{cfg:?}").contains("hunter2"));
    assert!(!toml::to_string(&cfg).unwrap().contains("hunter2"));
    assert!(!serde_json::to_string(&cfg).unwrap().contains("hunter2"));
    assert_eq!(
        cfg.registries["ghcr.io"]
            .password
            .as_ref()
            .unwrap()
            .expose(),
        "hunter2-secret"
    );
}

#[test]
fn inline_credentials_need_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("perryconfig.toml");
    std::fs::write(
        &path,
        "[registries.\"ghcr.io\"]\nusername = \"bot\"\npassword = \"pw\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("holds registry credentials but has mode 644; run `chmod 600"),
        "{e}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    Config::load(&path).unwrap();
}

#[test]
fn missing_file_names_it() {
    let e = Config::load(Path::new("/nonexistent/perryconfig.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/nonexistent/perryconfig.toml: cannot read configuration"),
        "{e}"
    );
}

#[test]
fn example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../perryconfig.example.toml");
    let cfg = Config::load(&path).unwrap();
    assert_eq!(cfg.trust.rules.len(), 1);
    assert_eq!(
        cfg.trust.rules[0].keyless[0].issuer,
        "https://token.actions.githubusercontent.com"
    );
    for name in ["git-log", "jq", "ls"] {
        assert!(cfg.capabilities.contains_key(name), "{name}");
    }
    let git = perry_policies::ImageRef::parse("cgr.dev/chainguard/git:latest").unwrap();
    assert_eq!(cfg.trust.rules_for(&git).len(), 1);
    let cap = &cfg.capabilities["git-log"];
    assert!(cap.check_args(&["-n5".into()]).is_ok());
    assert!(cap.check_args(&["--upload-pack=evil".into()]).is_err());
}

#[test]
fn misspelled_tier_table_suggests() {
    assert_error("[tiers.harden]\npids = 1\n", "did you mean `hardened`?");
}
