//! Loader behaviour beyond the shared cases: TOML files, profiles, project names,
//! file discovery, `.env` precedence, normalisation switches, tree interpolation.

use perry_compose::{
    find_compose_files, load, normalize_project_name, Condition, HealthTest, LoadError,
    LoadOptions, VolumeKind,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn toml_and_yaml_load_to_the_same_project() {
    let d = tempfile::tempdir().unwrap();
    let yaml = "name: demo\nservices:\n  web:\n    image: nginx\n    depends_on: [api]\n    ports: [\"8080:80\"]\n  api:\n    image: api\n    healthcheck:\n      test: curl -f http://localhost/\n      interval: 30s\nvolumes:\n  pgdata:\n    driver: local\n";
    let toml = "name = \"demo\"\n[services.web]\nimage = \"nginx\"\ndepends_on = [\"api\"]\nports = [\"8080:80\"]\n[services.api]\nimage = \"api\"\n[services.api.healthcheck]\ntest = \"curl -f http://localhost/\"\ninterval = \"30s\"\n[volumes]\npgdata = { driver = \"local\" }\n";
    write(d.path(), &[("compose.yaml", yaml), ("compose.toml", toml)]);
    let a = load(&LoadOptions {
        files: vec![d.path().join("compose.yaml")],
        ..LoadOptions::default()
    })
    .unwrap();
    let b = load(&LoadOptions {
        files: vec![d.path().join("compose.toml")],
        ..LoadOptions::default()
    })
    .unwrap();
    assert_eq!(a, b);
    let api = &a.services["api"];
    let hc = api.healthcheck.as_ref().unwrap();
    assert_eq!(
        hc.test,
        HealthTest::CmdShell("curl -f http://localhost/".into())
    );
    assert_eq!(hc.interval, Some(Duration::from_secs(30)));
    let dep = &a.services["web"].depends_on["api"];
    assert_eq!(
        (dep.condition, dep.required),
        (Condition::ServiceStarted, true)
    );
}

#[test]
fn toml_reset_and_override_spelling() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        &[
            (
                "compose.yaml",
                "services:\n  web:\n    image: nginx\n    ports: [\"80:80\"]\n    environment: {A: \"1\", B: \"2\"}\n",
            ),
            (
                "override.toml",
                "[services.web]\nports = { \"!reset\" = [] }\nenvironment = { \"!override\" = { C = \"3\" } }\n",
            ),
        ],
    );
    let p = load(&LoadOptions {
        files: vec![
            d.path().join("compose.yaml"),
            d.path().join("override.toml"),
        ],
        ..LoadOptions::default()
    })
    .unwrap();
    let web = &p.services["web"];
    assert!(web.ports.is_empty());
    assert_eq!(
        web.environment,
        BTreeMap::from([("C".to_string(), Some("3".to_string()))])
    );
}

#[test]
fn profiles_from_options_and_compose_profiles() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        &[(
            "compose.yaml",
            "services:\n  web:\n    image: nginx\n  debug:\n    image: busybox\n    profiles: [debug]\n  dev:\n    image: busybox\n    profiles: [dev, debug]\n",
        )],
    );
    let names = |profiles: &[&str], e: &[(&str, &str)]| -> Vec<String> {
        load(&LoadOptions {
            files: vec![d.path().join("compose.yaml")],
            profiles: profiles.iter().map(|s| s.to_string()).collect(),
            environment: env(e),
            ..LoadOptions::default()
        })
        .unwrap()
        .services
        .keys()
        .cloned()
        .collect()
    };
    assert_eq!(names(&[], &[]), ["web"]);
    assert_eq!(names(&["dev"], &[]), ["dev", "web"]);
    assert_eq!(
        names(&[], &[("COMPOSE_PROFILES", "debug")]),
        ["debug", "dev", "web"]
    );
    assert_eq!(names(&["*"], &[]), ["debug", "dev", "web"]);
    // --profile wins over COMPOSE_PROFILES
    assert_eq!(
        names(&["dev"], &[("COMPOSE_PROFILES", "debug")]),
        ["dev", "web"]
    );
}

#[test]
fn depending_on_a_disabled_service_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        &[(
            "compose.yaml",
            "services:\n  web:\n    image: nginx\n    depends_on: [db]\n  db:\n    image: pg\n    profiles: [db]\n",
        )],
    );
    let e = load(&LoadOptions {
        files: vec![d.path().join("compose.yaml")],
        ..LoadOptions::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("which is disabled"), "{e}");
}

#[test]
fn project_name_precedence_and_normalisation() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("My Project.1");
    write(
        &dir,
        &[("compose.yaml", "services:\n  web:\n    image: nginx\n")],
    );
    let with = |name: Option<&str>, e: &[(&str, &str)]| {
        load(&LoadOptions {
            files: vec![dir.join("compose.yaml")],
            project_name: name.map(String::from),
            environment: env(e),
            ..LoadOptions::default()
        })
    };
    assert_eq!(with(None, &[]).unwrap().name, "myproject1");
    assert_eq!(
        with(None, &[("COMPOSE_PROJECT_NAME", "fromenv")])
            .unwrap()
            .name,
        "fromenv"
    );
    assert_eq!(
        with(Some("cli"), &[("COMPOSE_PROJECT_NAME", "fromenv")])
            .unwrap()
            .name,
        "cli"
    );
    assert!(matches!(
        with(Some("Bad Name"), &[]),
        Err(LoadError::Invalid(_))
    ));
    write(
        &dir,
        &[(
            "compose.yaml",
            "name: ${N:-infile}\nservices:\n  web:\n    image: nginx:${COMPOSE_PROJECT_NAME}\n",
        )],
    );
    let p = with(None, &[]).unwrap();
    assert_eq!(p.name, "infile");
    assert_eq!(p.services["web"].image.as_deref(), Some("nginx:infile"));
    assert_eq!(normalize_project_name("Hello World_-x"), "helloworld_-x");
}

#[test]
fn finds_compose_files_in_parents_with_override() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        &[
            ("compose.yml", "services: {}\n"),
            ("docker-compose.yml", "services: {}\n"),
            ("compose.override.yaml", "services: {}\n"),
            ("a/b/readme", ""),
        ],
    );
    let found = find_compose_files(&d.path().join("a/b")).unwrap();
    assert_eq!(
        found,
        [
            d.path().join("compose.yml"),
            d.path().join("compose.override.yaml")
        ]
    );
    let empty = tempfile::tempdir().unwrap();
    write(
        empty.path(),
        &[("compose.toml", "[services.web]\nimage = \"x\"\n")],
    );
    assert_eq!(
        find_compose_files(empty.path()).unwrap(),
        [empty.path().join("compose.toml")]
    );
}

#[test]
fn compose_file_variable_and_discovery() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        &[
            ("compose.yaml", "services:\n  web:\n    image: a\n"),
            ("other.yaml", "services:\n  web:\n    image: b\n"),
            ("extra.yaml", "services:\n  web:\n    privileged: true\n"),
        ],
    );
    let p = load(&LoadOptions {
        project_directory: Some(d.path().to_path_buf()),
        ..LoadOptions::default()
    })
    .unwrap();
    assert_eq!(p.services["web"].image.as_deref(), Some("a"));
    let p = load(&LoadOptions {
        project_directory: Some(d.path().to_path_buf()),
        environment: env(&[("COMPOSE_FILE", "other.yaml:extra.yaml")]),
        ..LoadOptions::default()
    })
    .unwrap();
    assert_eq!(p.services["web"].image.as_deref(), Some("b"));
    assert!(p.services["web"].privileged);
}

#[test]
fn dotenv_precedence_shell_wins_and_env_files_replace_dot_env() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        &[
            ("compose.yaml", "services:\n  web:\n    image: \"nginx:${TAG}\"\n    environment:\n      - MODE=${MODE}\n"),
            (".env", "TAG=from-dotenv\nMODE=dotenv\n"),
            ("prod.env", "TAG=from-prod\n"),
        ],
    );
    let run = |files: Vec<&str>, e: &[(&str, &str)]| {
        let p = load(&LoadOptions {
            files: vec![d.path().join("compose.yaml")],
            env_files: files.into_iter().map(|f| d.path().join(f)).collect(),
            environment: env(e),
            ..LoadOptions::default()
        })
        .unwrap();
        let web = p.services["web"].clone();
        (web.image.unwrap(), web.environment["MODE"].clone().unwrap())
    };
    assert_eq!(
        run(vec![], &[]),
        ("nginx:from-dotenv".into(), "dotenv".into())
    );
    assert_eq!(
        run(vec![], &[("TAG", "shell")]),
        ("nginx:shell".into(), "dotenv".into())
    );
    assert_eq!(
        run(vec!["prod.env"], &[]),
        ("nginx:from-prod".into(), "".into())
    );
}

#[test]
fn switches_no_normalize_no_paths_no_interpolate() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        &[("compose.yaml", "services:\n  web:\n    image: \"nginx:${TAG:-x}\"\n    volumes: [./data:/data]\n    links: [db]\n  db:\n    image: pg\n")],
    );
    let base = LoadOptions {
        files: vec![d.path().join("compose.yaml")],
        ..LoadOptions::default()
    };
    let full = load(&base).unwrap();
    let web = &full.services["web"];
    assert!(web.networks.contains_key("default"));
    assert!(full.networks.contains_key("default"));
    assert!(web.depends_on.contains_key("db"), "links imply depends_on");
    assert_eq!(web.volumes[0].kind, VolumeKind::Bind);
    assert_eq!(
        web.volumes[0].source.as_deref(),
        Some(d.path().join("data").to_str().unwrap())
    );
    let raw = load(&LoadOptions {
        normalize: false,
        resolve_paths: false,
        interpolate: false,
        ..base
    })
    .unwrap();
    let web = &raw.services["web"];
    assert!(web.networks.is_empty() && raw.networks.is_empty());
    assert_eq!(web.volumes[0].source.as_deref(), Some("./data"));
    assert_eq!(web.image.as_deref(), Some("nginx:${TAG:-x}"));
}

#[test]
fn interpolation_tree_cases() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/interpolation.json"
    ))
    .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    for case in doc["tree_cases"].as_array().unwrap() {
        // Wrap each case as x-* extensions of a project, which are interpolated and kept verbatim.
        let d = tempfile::tempdir().unwrap();
        let mut input = serde_json::Map::new();
        input.insert("x-case".into(), case["input"].clone());
        input.insert("services".into(), serde_json::json!({}));
        let file = d.path().join("compose.yaml");
        std::fs::write(&file, serde_json::to_string(&input).unwrap()).unwrap();
        let e: BTreeMap<String, String> = case["env"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let p = load(&LoadOptions {
            files: vec![file],
            environment: e,
            ..LoadOptions::default()
        })
        .unwrap();
        assert_eq!(p.extensions["x-case"], case["expected"], "{}", case["id"]);
    }
}

#[test]
fn canonical_forms() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        &[("compose.yaml", concat!(
            "services:\n  web:\n    image: nginx\n",
            "    command: [\"sh\", \"-c\", \"echo hi\"]\n",
            "    entrypoint: /bin/sh -c 'exec \"$$0\"'\n",
            "    ports:\n      - \"127.0.0.1:8000-8001:80-81/udp\"\n      - target: 443\n        published: 8443\n",
            "    healthcheck:\n      test: [\"NONE\"]\n",
            "    extra_hosts: [\"db:10.0.0.1\", \"db=10.0.0.2\"]\n",
            "    ulimits:\n      nofile: {soft: 1, hard: 2}\n      nproc: 3\n",
            "    tmpfs: /tmp\n",
            "    mem_limit: 1g\n",
            "    deploy:\n      replicas: 2\n",
        ))],
    );
    let p = load(&LoadOptions {
        files: vec![d.path().join("compose.yaml")],
        ..LoadOptions::default()
    })
    .unwrap();
    let web = &p.services["web"];
    assert_eq!(
        web.entrypoint.as_deref().unwrap(),
        ["/bin/sh", "-c", "exec \"$0\""]
    );
    assert_eq!(web.ports.len(), 3);
    assert_eq!(web.ports[1].target, 81);
    assert_eq!(web.ports[1].published.as_deref(), Some("8001"));
    assert_eq!(web.ports[1].protocol.as_deref(), Some("udp"));
    assert_eq!(web.ports[2].published.as_deref(), Some("8443"));
    assert_eq!(web.healthcheck.as_ref().unwrap().test, HealthTest::None);
    assert_eq!(web.extra_hosts["db"], ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(web.tmpfs, ["/tmp"]);
    assert_eq!(web.mem_limit.unwrap().0, 1 << 30);
    assert_eq!(web.replicas(), 2);
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(
        json["services"]["web"]["extra_hosts"],
        serde_json::json!(["db=10.0.0.1", "db=10.0.0.2"])
    );
    assert_eq!(
        json["services"]["web"]["ulimits"],
        serde_json::json!({"nofile": {"soft": 1, "hard": 2}, "nproc": 3})
    );
}

fn testdata(f: &str) -> perry_compose::Project {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loader/testdata");
    load(&LoadOptions {
        files: vec![data.join(f)],
        project_name: Some("t".into()),
        consistency: false,
        ..LoadOptions::default()
    })
    .unwrap()
}

#[test]
fn extends_reset_removes_the_inherited_value() {
    let p = testdata("extends/reset.yaml");
    assert_eq!(
        p.services["init"].command.as_deref().unwrap(),
        ["sleep", "infinity"]
    );
    assert_eq!(p.services["base"].command, None);
    assert_eq!(p.services["base"].image.as_deref(), Some("alpine:latest"));
}

#[test]
fn extends_chains_across_directories() {
    let p = testdata("extends/withdir/compose.yaml");
    assert_eq!(p.services["test"].image.as_deref(), Some("hello-world"));
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loader/testdata");
    let p = testdata("extends/nested.yaml");
    let ctx = p.services["with-build"]
        .build
        .as_ref()
        .unwrap()
        .context
        .clone();
    assert_eq!(ctx.as_deref(), Some(data.join("extends").to_str().unwrap()));
}

#[test]
fn include_then_extends_resolves_paths_from_the_included_file() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loader/testdata");
    let p = testdata("combined/compose.yaml");
    let ctx = p.services["service"]
        .build
        .as_ref()
        .unwrap()
        .context
        .clone();
    assert_eq!(
        ctx.as_deref(),
        Some(data.join("combined/dir").to_str().unwrap())
    );
}

#[test]
fn multi_document_yaml_merges_documents_in_order() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        &[(
            "compose.yaml",
            "services:\n  web:\n    image: a\n    ports: [\"80:80\"]\n---\n---\nservices:\n  web:\n    image: b\n    ports: !reset []\n",
        )],
    );
    let p = load(&LoadOptions {
        files: vec![d.path().join("compose.yaml")],
        ..LoadOptions::default()
    })
    .unwrap();
    assert_eq!(p.services["web"].image.as_deref(), Some("b"));
    assert!(p.services["web"].ports.is_empty());
    write(
        d.path(),
        &[(
            "bad.yaml",
            "services: {}\n---\nservices:\n  web:\n    imgae: x\n",
        )],
    );
    let e = load(&LoadOptions {
        files: vec![d.path().join("bad.yaml")],
        ..LoadOptions::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains(":5:5: services.web.imgae:"), "{e}");
}

/// docker compose reads `.env` before it looks for the files, so `COMPOSE_FILE`,
/// `COMPOSE_PATH_SEPARATOR`, `COMPOSE_PROFILES` and `COMPOSE_PROJECT_NAME` may be
/// set there; the shell still wins.
#[test]
fn compose_variables_from_the_dotenv_file() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    write(
        dir,
        &[
            ("compose.yaml", "services:\n  default:\n    image: wrong\n"),
            ("a/base.yaml", "services:\n  web:\n    image: nginx\n"),
            (
                "a/more.yaml",
                "services:\n  web:\n    read_only: true\n  debug:\n    image: busybox\n    profiles: [debug]\n",
            ),
            (
                ".env",
                "COMPOSE_FILE=a/base.yaml;a/more.yaml\nCOMPOSE_PATH_SEPARATOR=;\nCOMPOSE_PROFILES=debug\nCOMPOSE_PROJECT_NAME=fromdotenv\n",
            ),
        ],
    );
    let with = |shell: &[(&str, &str)]| {
        load(&LoadOptions {
            project_directory: Some(dir.to_path_buf()),
            environment: env(shell),
            ..LoadOptions::default()
        })
        .unwrap()
    };
    let p = with(&[]);
    assert_eq!(p.name, "fromdotenv");
    assert_eq!(
        p.services.keys().collect::<Vec<_>>(),
        ["debug", "web"],
        "COMPOSE_FILE and COMPOSE_PROFILES from .env"
    );
    assert!(p.services["web"].read_only, "a/more.yaml merged");
    // the shell wins over .env
    let p = with(&[
        ("COMPOSE_FILE", "compose.yaml"),
        ("COMPOSE_PROJECT_NAME", "fromshell"),
    ]);
    assert_eq!(p.name, "fromshell");
    assert_eq!(p.services.keys().collect::<Vec<_>>(), ["default"]);
}

/// Booleans as compose-go reads them: the YAML is 1.2 (unquoted `yes` is a string,
/// kept as written in a string field), and a string decoded into a boolean field,
/// literal or interpolated, goes through compose-go's `toBoolean`: `true`/`false`
/// and the YAML 1.1 words `y`/`yes`/`on`/`n`/`no`/`off` (upstream's
/// TestLoadLegacyBoolean: `init: yes` is true), anything else refused.
#[test]
fn booleans_are_cast_like_compose_go() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("compose.yaml");
    let run = |yaml: &str, shell: &[(&str, &str)]| {
        std::fs::write(&file, yaml).unwrap();
        load(&LoadOptions {
            files: vec![file.clone()],
            environment: env(shell),
            ..LoadOptions::default()
        })
    };
    let p = run(
        "services:\n  test:\n    image: x\n    init: yes\n    read_only: OFF\n    tty: on\n    environment:\n      A: yes\n      B: on\n",
        &[],
    )
    .unwrap();
    let s = &p.services["test"];
    assert_eq!(s.init, Some(true), "literal yes");
    assert!(!s.read_only, "literal OFF");
    assert!(s.tty, "literal on");
    assert_eq!(
        s.environment["A"].as_deref(),
        Some("yes"),
        "a string stays a string"
    );
    assert_eq!(s.environment["B"].as_deref(), Some("on"));
    // interpolated: the same cast
    let yaml = "services:\n  test:\n    image: x\n    read_only: ${RO}\n";
    assert!(run(yaml, &[("RO", "Yes")]).unwrap().services["test"].read_only);
    assert!(!run(yaml, &[("RO", "n")]).unwrap().services["test"].read_only);
    // not a boolean word: refused, literal or interpolated
    for (yaml, shell) in [
        (
            "services:\n  test:\n    image: x\n    read_only: \"1\"\n",
            vec![],
        ),
        (yaml, vec![("RO", "1")]),
        (yaml, vec![("RO", "enabled")]),
    ] {
        let e = run(yaml, &shell).unwrap_err();
        assert!(e.to_string().contains("services.test.read_only: "), "{e}");
        assert!(e.to_string().contains("is not a boolean"), "{e}");
    }
}
