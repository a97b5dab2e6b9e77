//! Every error path of the loader names the file, line, column and key:
//! `file:line:col: path.to.key: message`.

use perry_compose::{load, LoadError, LoadOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

struct Dir(tempfile::TempDir);

impl Dir {
    fn new(files: &[(&str, &str)]) -> Dir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = d.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        Dir(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn load(
        &self,
        files: &[&str],
        env: &[(&str, &str)],
    ) -> Result<perry_compose::Project, LoadError> {
        load(&LoadOptions {
            files: files.iter().map(|f| self.path(f)).collect(),
            environment: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..LoadOptions::default()
        })
    }
}

/// Asserts `e` displays as `<file>:<line>:<col>: <key>: ...` containing `text`.
fn assert_at(e: &LoadError, file: &Path, line: u64, col: u64, key: &str, text: &str) {
    let msg = e.to_string();
    let prefix = format!("{}:{line}:{col}: {key}: ", file.display());
    assert!(
        msg.starts_with(&prefix),
        "{msg:?} should start with {prefix:?}"
    );
    assert!(msg.contains(text), "{msg:?} should contain {text:?}");
    let loc = e.location().expect("located");
    assert_eq!((loc.line, loc.column, loc.path.as_str()), (line, col, key));
}

const WEB: &str = "services:\n  web:\n    image: nginx\n";

#[test]
fn unknown_key_with_did_you_mean() {
    let d = Dir::new(&[(
        "compose.yaml",
        "services:\n  web:\n    image: nginx\n    prots: []\n",
    )]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert_at(
        &e,
        &d.path("compose.yaml"),
        4,
        5,
        "services.web.prots",
        "did you mean \"ports\"?",
    );
    assert!(matches!(e, LoadError::Invalid(_)));
}

#[test]
fn unknown_nested_and_top_level_keys() {
    let d = Dir::new(&[(
        "compose.yaml",
        "services:\n  web:\n    image: nginx\n    healthcheck:\n      intervall: 5s\n",
    )]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert_at(
        &e,
        &d.path("compose.yaml"),
        5,
        7,
        "services.web.healthcheck.intervall",
        "did you mean \"interval\"?",
    );
    let d = Dir::new(&[("compose.yaml", "servics:\n  web:\n    image: nginx\n")]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert_at(
        &e,
        &d.path("compose.yaml"),
        1,
        1,
        "servics",
        "did you mean \"services\"?",
    );
}

#[test]
fn wrong_type_after_interpolation() {
    let d = Dir::new(&[(
        "compose.yaml",
        "services:\n  web:\n    image: nginx\n    read_only: ${RO}\n",
    )]);
    assert!(
        d.load(&["compose.yaml"], &[("RO", "true")])
            .unwrap()
            .services["web"]
            .read_only
    );
    let e = d.load(&["compose.yaml"], &[("RO", "maybe")]).unwrap_err();
    assert_at(
        &e,
        &d.path("compose.yaml"),
        4,
        16,
        "services.web.read_only",
        "not a boolean",
    );
}

#[test]
fn bad_duration_and_port() {
    let d = Dir::new(&[(
        "compose.yaml",
        "services:\n  web:\n    image: nginx\n    stop_grace_period: 10 parsecs\n",
    )]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert_at(
        &e,
        &d.path("compose.yaml"),
        4,
        24,
        "services.web.stop_grace_period",
        "invalid duration",
    );
    let d = Dir::new(&[(
        "compose.yaml",
        "services:\n  web:\n    image: nginx\n    ports:\n      - \"80:http\"\n",
    )]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert_at(
        &e,
        &d.path("compose.yaml"),
        5,
        9,
        "services.web.ports.0",
        "invalid port",
    );
}

#[test]
fn missing_required_variable_names_it_but_not_values() {
    let d = Dir::new(&[(
        "compose.yaml",
        "services:\n  web:\n    image: nginx\n    environment:\n      TOKEN: ${TOKEN:?set the token}\n      OTHER: ${SECRET}\n",
    )]);
    let e = d
        .load(&["compose.yaml"], &[("SECRET", "hunter2")])
        .unwrap_err();
    assert_at(
        &e,
        &d.path("compose.yaml"),
        5,
        14,
        "services.web.environment.TOKEN",
        "required variable TOKEN is missing a value: set the token",
    );
    assert!(matches!(e, LoadError::Interpolation(_)));
    assert!(!e.to_string().contains("hunter2"));
}

#[test]
fn invalid_template() {
    let d = Dir::new(&[(
        "compose.yaml",
        "services:\n  web:\n    image: \"nginx:${TAG\"\n",
    )]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert_at(
        &e,
        &d.path("compose.yaml"),
        3,
        12,
        "services.web.image",
        "Invalid template",
    );
}

#[test]
fn dotenv_errors_name_file_and_line() {
    let d = Dir::new(&[
        ("compose.yaml", WEB),
        (".env", "OK=1\nSECRET=\"hunter2\nlol$wut\n"),
    ]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    let msg = e.to_string();
    let prefix = format!("{}:2: ", d.path(".env").display());
    assert!(msg.starts_with(&prefix), "{msg}");
    assert!(msg.contains("unterminated quoted value"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn yaml_syntax_and_duplicates() {
    let d = Dir::new(&[("compose.yaml", "services:\n  web:\n    image: [nginx\n")]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert!(matches!(e, LoadError::Syntax(_)), "{e}");
    assert!(e
        .to_string()
        .starts_with(&format!("{}:", d.path("compose.yaml").display())));
    let d = Dir::new(&[(
        "compose.yaml",
        "services:\n  web:\n    image: a\n    image: b\n",
    )]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert!(matches!(e, LoadError::Syntax(_)), "{e}");
    assert_at(
        &e,
        &d.path("compose.yaml"),
        4,
        5,
        "services.web.image",
        "mapping key \"image\" already defined at line 3",
    );
}

#[test]
fn undefined_references() {
    let cases: [(&str, u64, u64, &str, &str); 6] = [
        (
            "services:\n  web:\n    image: nginx\n    depends_on: [dbb]\n  db:\n    image: pg\n",
            4,
            18,
            "services.web.depends_on.dbb",
            "service \"web\" depends on undefined service \"dbb\" (did you mean \"db\"?)",
        ),
        (
            "services:\n  web:\n    image: nginx\n    networks: [front]\n",
            4,
            16,
            "services.web.networks.front",
            "service \"web\" refers to undefined network front",
        ),
        (
            "services:\n  web:\n    image: nginx\n    volumes:\n      - data:/data\n",
            5,
            9,
            "services.web.volumes.0",
            "service \"web\" refers to undefined volume data",
        ),
        (
            "services:\n  web:\n    image: nginx\n    secrets:\n      - token\n",
            5,
            9,
            "services.web.secrets.0",
            "service \"web\" refers to undefined secret token",
        ),
        (
            "services:\n  web:\n    image: nginx\n    configs:\n      - conf\n",
            5,
            9,
            "services.web.configs.0",
            "service \"web\" refers to undefined config conf",
        ),
        (
            "services:\n  web:\n    image: nginx\n    container_name: web\n    scale: 2\n",
            4,
            5,
            "services.web.container_name",
            "can't set container_name and scale > 1",
        ),
    ];
    for (yaml, line, col, key, text) in cases {
        let d = Dir::new(&[("compose.yaml", yaml)]);
        let e = d.load(&["compose.yaml"], &[]).unwrap_err();
        assert!(matches!(e, LoadError::Consistency(_)), "{e}");
        assert_at(&e, &d.path("compose.yaml"), line, col, key, text);
    }
}

#[test]
fn consistency_checks_can_be_skipped() {
    let d = Dir::new(&[(
        "compose.yaml",
        "services:\n  web:\n    image: nginx\n    depends_on: [nope]\n",
    )]);
    let p = load(&LoadOptions {
        files: vec![d.path("compose.yaml")],
        consistency: false,
        ..LoadOptions::default()
    })
    .unwrap();
    assert!(p.services["web"].depends_on.contains_key("nope"));
}

#[test]
fn depends_on_cycles_name_the_services() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loader/testdata");
    let run = |f: &str| {
        load(&LoadOptions {
            files: vec![data.join(f)],
            ..LoadOptions::default()
        })
        .unwrap_err()
    };
    let e = run("compose-depends-on-cycle.yaml");
    let text = std::fs::read_to_string(data.join("compose-depends-on-cycle.yaml")).unwrap();
    // located at service1's `depends_on` entry naming service2
    let (line, col) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| {
            l.find("service2")
                .filter(|_| l.trim_start().starts_with('-') || l.contains("service2:"))
                .map(|c| (i as u64 + 1, c as u64 + 1))
        })
        .unwrap();
    assert!(matches!(e, LoadError::DependencyCycle { ref services, .. } if services.len() == 4));
    assert_at(
        &e,
        &data.join("compose-depends-on-cycle.yaml"),
        line,
        col,
        "services.service1.depends_on.service2",
        "dependency cycle detected: service1 -> service2 -> service3 -> service1",
    );
    let e = run("compose-depends-on-self.yaml");
    assert!(
        e.to_string().ends_with(
            "services.service1.depends_on.service1: dependency cycle detected: service1 -> service1"
        ),
        "{e}"
    );
    assert!(e.location().unwrap().line > 0);
    // and in a file of our own, the exact place
    let d = Dir::new(&[(
        "compose.yaml",
        "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on:\n      a:\n        condition: service_started\n",
    )]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert_at(
        &e,
        &d.path("compose.yaml"),
        4,
        18,
        "services.a.depends_on.b",
        "dependency cycle detected: a -> b -> a",
    );
}

#[test]
fn yaml_and_toml_syntax_errors_are_located() {
    let d = Dir::new(&[
        ("compose.yaml", "services:\n  web:\n    image: [nginx\n"),
        (
            "compose.toml",
            "[services.web]\nimage = \"nginx\"\nports = [\n",
        ),
        ("dup.toml", "[services.web]\nimage = \"a\"\nimage = \"b\"\n"),
    ]);
    for (f, line) in [("compose.yaml", 3), ("compose.toml", 3), ("dup.toml", 3)] {
        let e = d.load(&[f], &[]).unwrap_err();
        assert!(matches!(e, LoadError::Syntax(_)), "{e}");
        let loc = e.location().unwrap();
        assert_eq!(loc.file, d.path(f).display().to_string(), "{e}");
        assert!(loc.line >= line - 1 && loc.line <= line + 1, "{f}: {e}");
        assert!(loc.column > 0, "{f}: {e}");
        assert!(
            e.to_string().starts_with(&format!(
                "{}:{}:{}: ",
                d.path(f).display(),
                loc.line,
                loc.column
            )),
            "{e}"
        );
    }
}

#[test]
fn alias_bombs_are_refused_quickly_and_located() {
    let mut y = String::from(
        "x-a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 9].join(",");
        y.push_str(&format!("x-{}: &{} [{refs}]\n", w[1], w[1]));
    }
    y.push_str("services:\n  web:\n    image: nginx\n    command: *i\n");
    let d = Dir::new(&[("compose.yaml", &y)]);
    let t = std::time::Instant::now();
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
    assert!(matches!(e, LoadError::Syntax(_)), "{e}");
    let loc = e.location().unwrap();
    assert_eq!(loc.file, d.path("compose.yaml").display().to_string());
    assert!(loc.line > 0 && loc.column > 0, "{e}");
    assert!(e.to_string().contains("excessive aliasing"), "{e}");
}

#[test]
fn oversized_files_are_refused_naming_the_file() {
    let big = format!(
        "services:\n  web:\n    image: nginx\nx-pad: \"{}\"\n",
        "a".repeat(perry_compose::MAX_FILE_BYTES)
    );
    let d = Dir::new(&[("compose.yaml", &big)]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}:", d.path("compose.yaml").display())),
        "{e}"
    );
}

#[test]
fn other_undefined_references_are_located() {
    let cases: [(&str, u64, u64, &str, &str); 3] = [
        (
            "services:\n  web:\n    image: nginx\n    volumes_from: [store]\n",
            4,
            20,
            // normalisation turns it into a dependency, as compose-go does
            "services.web.depends_on.store",
            "service \"web\" depends on undefined service \"store\"",
        ),
        (
            "services:\n  web:\n    image: nginx\n    network_mode: service:gone\n",
            4,
            19,
            "services.web.depends_on.gone",
            "service \"web\" depends on undefined service \"gone\"",
        ),
        (
            "services:\n  web:\n    image: nginx\n    ipc: service:nope\n",
            4,
            10,
            "services.web.depends_on.nope",
            "service \"web\" depends on undefined service \"nope\"",
        ),
    ];
    for (yaml, line, col, key, text) in cases {
        let d = Dir::new(&[("compose.yaml", yaml)]);
        let e = d.load(&["compose.yaml"], &[]).unwrap_err();
        assert!(matches!(e, LoadError::Consistency(_)), "{e}");
        assert_at(&e, &d.path("compose.yaml"), line, col, key, text);
    }
}

#[test]
fn service_namespaces_without_normalisation_are_checked_where_written() {
    let d = Dir::new(&[(
        "compose.yaml",
        "services:\n  web:\n    image: nginx\n    network_mode: service:gone\n",
    )]);
    let e = load(&LoadOptions {
        files: vec![d.path("compose.yaml")],
        normalize: false,
        ..LoadOptions::default()
    })
    .unwrap_err();
    assert_at(
        &e,
        &d.path("compose.yaml"),
        4,
        5,
        "services.web.network_mode",
        "service \"gone\" not found for network_mode 'service:gone'",
    );
}

#[test]
fn extends_from_another_file_errors_are_located() {
    let d = Dir::new(&[
        (
            "compose.yaml",
            "services:\n  web:\n    extends:\n      file: base.yaml\n      service: nope\n",
        ),
        ("base.yaml", "services:\n  base:\n    image: nginx\n"),
    ]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert!(matches!(e, LoadError::Extends(_)), "{e}");
    assert_at(
        &e,
        &d.path("compose.yaml"),
        4,
        7,
        "services.web.extends.service",
        &format!(
            "cannot extend service \"nope\" from {}: service not found",
            d.path("base.yaml").display()
        ),
    );
}

#[test]
fn extends_errors_are_located() {
    let d = Dir::new(&[(
        "compose.yaml",
        "services:\n  web:\n    extends: bsae\n  base:\n    image: nginx\n",
    )]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert!(matches!(e, LoadError::Extends(_)), "{e}");
    assert_at(
        &e,
        &d.path("compose.yaml"),
        3,
        14,
        "services.web.extends.service",
        "service \"web\" extends undefined service \"bsae\" (did you mean \"base\"?)",
    );
    let d = Dir::new(&[(
        "compose.yaml",
        "services:\n  a:\n    extends: b\n  b:\n    extends: a\n",
    )]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert!(matches!(e, LoadError::Extends(_)), "{e}");
    assert_at(
        &e,
        &d.path("compose.yaml"),
        3,
        14,
        "services.a.extends",
        "circular reference with extends: a -> b -> a",
    );
}

#[test]
fn include_cycle_is_refused() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loader/testdata");
    let e = load(&LoadOptions {
        files: vec![data.join("compose-include-cycle.yaml")],
        ..LoadOptions::default()
    })
    .unwrap_err();
    assert!(matches!(e, LoadError::Extends(_)), "{e}");
    let file = data.join("compose-include-cycle.yaml");
    assert_at(
        &e,
        &file,
        2,
        5,
        "include.0",
        &format!(
            "include cycle detected: {} -> {}",
            file.display(),
            file.display()
        ),
    );
}

#[test]
fn errors_in_override_files_name_that_file() {
    let d = Dir::new(&[
        ("compose.yaml", WEB),
        (
            "compose.override.yaml",
            "services:\n  web:\n    privileged: sometimes\n",
        ),
    ]);
    let e = d
        .load(&["compose.yaml", "compose.override.yaml"], &[])
        .unwrap_err();
    assert_at(
        &e,
        &d.path("compose.override.yaml"),
        3,
        17,
        "services.web.privileged",
        "not a boolean",
    );
}

#[test]
fn missing_file_and_missing_env_file() {
    let d = Dir::new(&[(
        "compose.yaml",
        "services:\n  web:\n    image: nginx\n    env_file: ./nope.env\n",
    )]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert_at(
        &e,
        &d.path("compose.yaml"),
        4,
        15,
        "services.web.env_file.0",
        "not found",
    );
    let e = d.load(&["absent.yaml"], &[]).unwrap_err();
    assert!(matches!(e, LoadError::Io { .. }), "{e}");
}

#[test]
fn empty_compose_file_is_refused() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loader/testdata");
    let e = load(&LoadOptions {
        files: vec![data.join("empty.yaml")],
        ..LoadOptions::default()
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: empty compose file", data.join("empty.yaml").display())
    );
}

/// A variable's value: it must never appear in an error message.
const SECRET: &str = "hunter2secret";

/// Loads `compose.yaml` = `yaml` with `S` = [`SECRET`] and asserts the error is at
/// `line:col`, `key`, contains `text` and never the secret's bytes.
fn assert_secret_kept(yaml: &str, line: u64, col: u64, key: &str, text: &str) {
    let d = Dir::new(&[("compose.yaml", yaml)]);
    let e = d.load(&["compose.yaml"], &[("S", SECRET)]).unwrap_err();
    assert_at(&e, &d.path("compose.yaml"), line, col, key, text);
    assert!(!format!("{e} {e:?}").contains(SECRET), "{e:?}");
}

#[test]
fn interpolated_values_never_appear_in_typing_errors() {
    let svc = |field: &str| format!("services:\n  web:\n    image: nginx\n    {field}\n");
    for (field, col, key, text) in [
        (
            "read_only: ${S}",
            16,
            "services.web.read_only",
            "(interpolated value) is not a boolean",
        ),
        (
            "cpus: ${S}",
            11,
            "services.web.cpus",
            "(interpolated value) is not a number",
        ),
        (
            "pids_limit: ${S}",
            17,
            "services.web.pids_limit",
            "(interpolated value) is not an integer",
        ),
        (
            "scale: ${S}",
            12,
            "services.web.scale",
            "(interpolated value) is not a non-negative integer",
        ),
        (
            "mem_limit: ${S}",
            16,
            "services.web.mem_limit",
            "invalid size (interpolated value)",
        ),
        (
            "stop_grace_period: ${S}",
            24,
            "services.web.stop_grace_period",
            "invalid duration (interpolated value)",
        ),
    ] {
        assert_secret_kept(&svc(field), 4, col, key, text);
    }
    assert_secret_kept(
        "services:\n  web:\n    image: nginx\n    healthcheck:\n      interval: ${S}\n",
        5,
        17,
        "services.web.healthcheck.interval",
        "invalid duration (interpolated value)",
    );
    assert_secret_kept(
        "services:\n  web:\n    image: nginx\n    configs:\n      - source: c\n        mode: ${S}\nconfigs:\n  c:\n    file: ./c\n",
        6,
        15,
        "services.web.configs.0.mode",
        "invalid file mode (interpolated value)",
    );
}

#[test]
fn interpolated_values_never_appear_in_short_syntax_errors() {
    let svc = |field: &str| format!("services:\n  web:\n    image: nginx\n    {field}\n");
    for (field, col, key, text) in [
        (
            "extra_hosts: [\"${S}\"]",
            19,
            "services.web.extra_hosts.0",
            "invalid extra host (interpolated value), expected host=ip",
        ),
        (
            "ports: [\"${S}\"]",
            13,
            "services.web.ports.0",
            "invalid port (interpolated value)",
        ),
        (
            "ports: [\"${S}:80\"]",
            13,
            "services.web.ports.0",
            "invalid port (interpolated value)",
        ),
        (
            "volumes: [\"vol:/b:ro:${S}\"]",
            15,
            "services.web.volumes.0",
            "invalid spec: (interpolated value): too many colons",
        ),
        (
            "devices: [\"a:b:c:${S}\"]",
            15,
            "services.web.devices.0",
            "confusing device mapping, please use long syntax: (interpolated value)",
        ),
        (
            "command: \"'${S}\"",
            14,
            "services.web.command",
            "unterminated single quote in (interpolated value)",
        ),
    ] {
        assert_secret_kept(&svc(field), 4, col, key, text);
    }
    assert_secret_kept(
        "services:\n  web:\n    image: nginx\n    build:\n      context: .\n      additional_contexts: [\"${S}\"]\n",
        6,
        29,
        "services.web.build.additional_contexts.0",
        "invalid value (interpolated value), expected key=value",
    );
}

#[test]
fn interpolated_values_never_appear_in_schema_errors() {
    assert_secret_kept(
        "services:\n  web:\n    image: nginx\n    pull_policy: ${S}\n",
        4,
        18,
        "services.web.pull_policy",
        "services.web.pull_policy (interpolated value) does not match pattern",
    );
}

#[test]
fn interpolated_values_never_appear_in_consistency_errors() {
    let svc = |field: &str| format!("services:\n  web:\n    image: nginx\n    {field}\n");
    for (field, col, key, text) in [
        (
            "volumes: [\"${S}:/x\"]",
            15,
            "services.web.volumes.0",
            "service \"web\" refers to undefined volume (interpolated value)",
        ),
        (
            "volumes: [{type: volume, source: \"${S}\", target: /x}]",
            15,
            "services.web.volumes.0",
            "refers to undefined volume (interpolated value)",
        ),
        (
            "secrets: [\"${S}\"]",
            15,
            "services.web.secrets.0",
            "refers to undefined secret (interpolated value)",
        ),
        (
            "configs: [\"${S}\"]",
            15,
            "services.web.configs.0",
            "refers to undefined config (interpolated value)",
        ),
        (
            "depends_on: [\"${S}\"]",
            18,
            "services.web.depends_on.(interpolated value)",
            "depends on undefined service (interpolated value)",
        ),
        (
            "networks: [\"${S}\"]",
            16,
            "services.web.networks.(interpolated value)",
            "refers to undefined network (interpolated value)",
        ),
        (
            "links: [\"${S}\"]",
            13,
            "services.web.depends_on.(interpolated value)",
            "depends on undefined service (interpolated value)",
        ),
        (
            "network_mode: \"service:${S}\"",
            19,
            "services.web.depends_on.(interpolated value)",
            "depends on undefined service (interpolated value)",
        ),
        (
            "env_file: ${S}",
            15,
            "services.web.env_file.0",
            "env file (interpolated value) not found",
        ),
    ] {
        assert_secret_kept(&svc(field), 4, col, key, text);
    }
}

#[test]
fn interpolated_values_never_appear_in_extends_and_name_errors() {
    assert_secret_kept(
        "services:\n  web:\n    image: nginx\n    extends: ${S}\n",
        4,
        14,
        "services.web.extends.service",
        "service \"web\" extends undefined service (interpolated value)",
    );
    // the file's name is never refused: normalised like compose-go
    let d = Dir::new(&[("compose.yaml", &format!("name: ${{S}}\n{WEB}"))]);
    let p = d
        .load(&["compose.yaml"], &[("S", "Hunter2Secret")])
        .unwrap();
    assert_eq!(p.name, "hunter2secret");
    // COMPOSE_PROJECT_NAME is checked, and not quoted
    let e = d
        .load(
            &["compose.yaml"],
            &[("COMPOSE_PROJECT_NAME", "Hunter2Secret")],
        )
        .unwrap_err();
    assert!(matches!(e, LoadError::Invalid(_)), "{e}");
    assert!(
        e.to_string()
            .contains("invalid project name (interpolated value) (COMPOSE_PROJECT_NAME)"),
        "{e}"
    );
    assert!(!e.to_string().contains("Hunter2Secret"), "{e}");
}

#[test]
fn interpolated_values_never_appear_even_where_no_site_redacts() {
    // The loader's safety net: a value interpolation substituted is replaced by
    // `${NAME}` wherever a message still carries it (here inside a file name).
    let d = Dir::new(&[("compose.yaml", "include:\n  - ${S}/x.yaml\n")]);
    let e = d.load(&["compose.yaml"], &[("S", SECRET)]).unwrap_err();
    let msg = e.to_string();
    assert!(!msg.contains(SECRET), "{msg}");
    assert!(msg.contains("${S}/x.yaml"), "{msg}");
}

#[test]
fn dotenv_syntax_errors_quote_the_name_only() {
    let d = Dir::new(&[
        ("compose.yaml", WEB),
        (".env", "OK=1\nAPI%KEY=hunter2secret\n"),
    ]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2: unexpected character \"%\" in variable name \"API%KEY\"",
            d.path(".env").display()
        )
    );
    let d = Dir::new(&[("compose.yaml", WEB), (".env", "API%KEY hunter2secret\n")]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert!(!e.to_string().contains(SECRET), "{e}");
}

#[test]
fn extends_mapping_without_service_is_refused_before_the_schema() {
    let d = Dir::new(&[(
        "compose.yaml",
        "services:\n  test:\n    image: test\n    extends:\n      file: base.yaml\n",
    )]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert!(matches!(e, LoadError::Extends(_)), "{e}");
    assert_at(
        &e,
        &d.path("compose.yaml"),
        5,
        7,
        "services.test.extends",
        "extends.test.service is required",
    );
}

#[test]
fn self_referencing_alias_names_compose_go_paths() {
    let d = Dir::new(&[(
        "compose.yaml",
        "name: test\nx-healthcheck: &healthcheck\n  egress-service:\n    <<: *healthcheck\n",
    )]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert!(matches!(e, LoadError::Syntax(_)), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "{}:4:9: cycle detected: node at path x-healthcheck.egress-service.egress-service references node at path x-healthcheck.egress-service",
            d.path("compose.yaml").display()
        )
    );
    let d = Dir::new(&[("compose.yaml", "x-a: &x\n  b:\n    - *x\n")]);
    let e = d.load(&["compose.yaml"], &[]).unwrap_err();
    assert!(
        e.to_string().ends_with(
            ":3:7: cycle detected: node at path x-a.b.0.b.0 references node at path x-a.b.0"
        ),
        "{e}"
    );
}

#[test]
fn top_level_name_is_normalised_or_kept_like_compose_go() {
    let d = Dir::new(&[("compose.yaml", &format!("name: My App\n{WEB}"))]);
    assert_eq!(d.load(&["compose.yaml"], &[]).unwrap().name, "myapp");
    let p = load(&LoadOptions {
        files: vec![d.path("compose.yaml")],
        normalize: false,
        ..LoadOptions::default()
    })
    .unwrap();
    assert_eq!(p.name, "My App", "--no-normalize prints it as written");
}

#[test]
fn required_variable_messages_keep_the_values_their_author_asked_for() {
    // compose-go expands `${FOO}` inside the `?` message (its
    // TestMandatoryVariableErrorsWithNestedExpansion); the safety net leaves it.
    let d = Dir::new(&[(
        "compose.yaml",
        "services:\n  web:\n    image: ${UNSET:?missing ${FOO}}\n",
    )]);
    let e = d.load(&["compose.yaml"], &[("FOO", "first")]).unwrap_err();
    assert_at(
        &e,
        &d.path("compose.yaml"),
        3,
        12,
        "services.web.image",
        "required variable UNSET is missing a value: missing first",
    );
}
