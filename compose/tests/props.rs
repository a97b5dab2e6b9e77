//! Property tests: the parsers and the loader never panic, whatever the input (bytes,
//! or compose-shaped trees full of wrong types), and a loaded project printed as
//! JSON or YAML (serde-saphyr, as `config --format yaml` prints it) loads back to
//! the same project.

use perry_compose::{load, parse_toml, parse_yaml, LoadOptions};
use proptest::prelude::*;
use serde_json::{Map, Value};

const SERVICE_KEYS: &[&str] = &[
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "labels",
    "ports",
    "expose",
    "volumes",
    "tmpfs",
    "networks",
    "network_mode",
    "depends_on",
    "healthcheck",
    "extends",
    "deploy",
    "ulimits",
    "secrets",
    "configs",
    "devices",
    "extra_hosts",
    "profiles",
    "scale",
    "container_name",
    "read_only",
    "privileged",
    "stop_grace_period",
    "logging",
    "sysctls",
    "cap_add",
    "user",
    "mem_limit",
    "x-ext",
    "context",
    "test",
    "interval",
    "condition",
    "required",
    "target",
    "published",
    "source",
    "type",
    "service",
    "file",
    "replicas",
    "aliases",
    "!reset",
    "!override",
    "soft",
    "hard",
    "path",
];

const INTERESTING: &[&str] = &[
    "8080:80",
    "127.0.0.1:5000-5010:5000-5010",
    "80-81:90",
    "./src:/src:ro",
    "data:/data",
    "${X:-1}",
    "${Y:?boom}",
    "$$",
    "${",
    "1m30s",
    "10 parsecs",
    "service_healthy",
    "db",
    "CMD-SHELL",
    "NONE",
    "~/x",
    "FOO=bar",
    "bare",
    "1g",
    "-1",
    "0440",
    ".",
    "..",
    "/",
    "container:x",
    "service:web",
    "host:1.2.3.4",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-70000i64..70000).prop_map(Value::from),
        "[a-z0-9$:{}./=~ -]{0,12}".prop_map(Value::String),
        proptest::sample::select(INTERESTING).prop_map(|s| Value::String(s.to_string())),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    proptest::sample::select(SERVICE_KEYS).prop_map(String::from),
                    "[a-z]{1,6}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Trees without `$`, for extensions of valid projects.
fn plain_tree() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        "[a-z0-9 ]{0,8}".prop_map(Value::String),
    ]
    .prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn project() -> impl Strategy<Value = Value> {
    let service = proptest::collection::btree_map(
        proptest::sample::select(SERVICE_KEYS).prop_map(String::from),
        tree(),
        0..6,
    );
    (
        proptest::collection::btree_map("[a-c]{1,2}", service, 0..4),
        proptest::collection::btree_map("[a-c]{1,2}", tree(), 0..3),
    )
        .prop_map(|(services, networks)| {
            let mut top = Map::new();
            top.insert(
                "services".into(),
                Value::Object(
                    services
                        .into_iter()
                        .map(|(k, v)| (k, Value::Object(v.into_iter().collect())))
                        .collect(),
                ),
            );
            top.insert(
                "networks".into(),
                Value::Object(networks.into_iter().collect()),
            );
            Value::Object(top)
        })
}

/// Mostly valid projects: every service has an image and a random subset of
/// well-formed fields in short or long syntax.
fn valid_project() -> impl Strategy<Value = Value> {
    use serde_json::json;
    let pick = |xs: &'static [&'static str]| proptest::sample::select(xs).prop_map(Value::from);
    let field = prop_oneof![
        proptest::collection::vec(
            pick(&[
                "80",
                "8080:80",
                "127.0.0.1:53:53/udp",
                "9000-9001:9000-9001",
                "3000-3002"
            ]),
            0..3
        )
        .prop_map(|v| ("ports", Value::Array(v))),
        proptest::collection::btree_map(
            "[A-Z]{1,3}",
            prop_oneof![Just(Value::Null), "[a-z0-9 ]{0,5}".prop_map(Value::from)],
            0..3
        )
        .prop_map(|m| ("environment", Value::Object(m.into_iter().collect()))),
        proptest::collection::vec("[A-Z]{1,3}=[a-z]{0,3}".prop_map(Value::from), 0..3)
            .prop_map(|v| ("labels", Value::Array(v))),
        proptest::collection::vec(
            pick(&["./a:/a", "/abs:/b:ro", "data:/data", "/anon", "~/h:/h:z"]),
            0..2
        )
        .prop_map(|v| ("volumes", Value::Array(v))),
        pick(&["echo hi 'a b'", "sh -c \"x y\""]).prop_map(|v| ("command", v)),
        Just((
            "healthcheck",
            json!({"test": "curl -f x", "interval": "10s", "retries": 3, "start_period": "1m30s"})
        )),
        Just((
            "healthcheck",
            json!({"test": ["CMD", "true"], "disable": false})
        )),
        pick(&["always", "no", "on-failure:3"]).prop_map(|v| ("restart", v)),
        any::<bool>().prop_map(|b| ("read_only", Value::Bool(b))),
        Just(("networks", json!(["front"]))),
        Just((
            "networks",
            json!({"front": {"aliases": ["x"], "ipv4_address": "10.0.0.2"}})
        )),
        (1u64..3).prop_map(|n| (
            "deploy",
            json!({"replicas": n, "resources": {"limits": {"memory": "50M", "cpus": "0.5"}}})
        )),
        Just((
            "ulimits",
            json!({"nofile": {"soft": 10, "hard": 20}, "nproc": 5})
        )),
        pick(&["1m30s", "10s", "500ms"]).prop_map(|v| ("stop_grace_period", v)),
        Just(("extra_hosts", json!(["h:1.2.3.4", "g=::1"]))),
        Just((
            "secrets",
            json!(["token", {"source": "token", "target": "/t", "mode": 288}])
        )),
        Just(("tmpfs", json!("/tmp"))),
        Just(("mem_limit", json!("1g"))),
        Just(("cap_drop", json!(["ALL"]))),
        plain_tree().prop_map(|t| ("x-ext", t)),
    ];
    let service =
        ("[a-z]{1,6}", proptest::collection::vec(field, 0..6)).prop_map(|(image, fields)| {
            let mut m = Map::new();
            m.insert("image".into(), Value::from(image));
            for (k, v) in fields {
                m.insert(k.to_string(), v);
            }
            Value::Object(m)
        });
    proptest::collection::btree_map("[a-d]{1,2}", service, 1..4).prop_map(|services| {
        json!({
            "services": Value::Object(services.into_iter().collect()),
            "networks": {"front": {"driver": "bridge"}},
            "volumes": {"data": null},
            "secrets": {"token": {"file": "./token"}},
            "x-top": {"a": 1},
        })
    })
}

fn load_text(name: &str, text: &[u8]) -> Result<perry_compose::Project, perry_compose::LoadError> {
    load_with(name, text, true)
}

/// Printed configuration is already interpolated, so it is read back with
/// interpolation off (a literal `$` in a value must stay one).
fn reload(text: &[u8]) -> Result<perry_compose::Project, perry_compose::LoadError> {
    load_with("compose.yaml", text, false)
}

fn load_with(
    name: &str,
    text: &[u8],
    interpolate: bool,
) -> Result<perry_compose::Project, perry_compose::LoadError> {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join(name);
    std::fs::write(&file, text).unwrap();
    std::fs::write(d.path().join(".env"), b"X=1\n").unwrap();
    load(&LoadOptions {
        files: vec![file],
        interpolate,
        ..LoadOptions::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_yaml("f.yaml", &text);
        let _ = parse_toml("f.toml", &text);
    }

    #[test]
    fn parsers_never_panic_on_yamlish_text(text in "[a-z:\\-\\[\\]{}&*!<>|'\" \n#$.0-9]{0,200}") {
        let _ = parse_yaml("f.yaml", &text);
        let _ = parse_toml("f.toml", &text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn load_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = load_text("compose.yaml", &bytes);
    }

    #[test]
    fn load_never_panics_on_compose_shaped_trees(doc in project()) {
        let yaml = serde_json::to_string(&doc).unwrap();
        let _ = load_text("compose.yaml", yaml.as_bytes());
        if let Ok(t) = toml::to_string(&strip_nulls(doc)) {
            let _ = load_text("compose.toml", t.as_bytes());
        }
    }

    #[test]
    fn valid_projects_load_and_round_trip(doc in valid_project()) {
        let yaml = serde_json::to_string(&doc).unwrap();
        let p = load_text("compose.yaml", yaml.as_bytes());
        prop_assert!(p.is_ok(), "{}\n{:?}", yaml, p);
        let p = p.unwrap();
        let printed = serde_json::to_string(&p).unwrap();
        let again = reload(printed.as_bytes());
        prop_assert_eq!(again.as_ref().ok(), Some(&p), "{}\n{:?}", printed, again);
        // `config --format yaml`: printed with serde-saphyr, loads back the same
        let printed = perry_compose::to_yaml(&p).unwrap();
        let again = reload(printed.as_bytes());
        prop_assert_eq!(again.as_ref().ok(), Some(&p), "{}\n{:?}", printed, again);
    }

    #[test]
    fn loaded_projects_round_trip_through_json(doc in project()) {
        let yaml = serde_json::to_string(&doc).unwrap();
        if let Ok(p) = load_text("compose.yaml", yaml.as_bytes()) {
            let printed = serde_json::to_string(&p).unwrap();
            let again = reload(printed.as_bytes());
            prop_assert_eq!(again.as_ref().ok(), Some(&p), "{}\n{:?}", printed, again);
        }
    }
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.into_iter()
                .filter(|v| !v.is_null())
                .map(strip_nulls)
                .collect(),
        ),
        v => v,
    }
}

#[test]
fn full_example_round_trips_through_json_and_yaml() {
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/full-example"
    ));
    let opts = LoadOptions {
        files: vec![dir.join("full-example.yml")],
        environment: [("HOME", "/home/t"), ("BAR", "b"), ("QUX", "q")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        consistency: false,
        ..LoadOptions::default()
    };
    let p = load(&opts).unwrap();
    let d = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("printed.json", serde_json::to_string_pretty(&p).unwrap()),
        ("printed.yaml", perry_compose::to_yaml(&p).unwrap()),
    ] {
        let out = d.path().join(name);
        std::fs::write(&out, text).unwrap();
        let again = load(&LoadOptions {
            files: vec![out],
            project_directory: Some(dir.to_path_buf()),
            ..opts.clone()
        })
        .unwrap();
        assert_eq!(again, p, "{name}");
    }
}

/// Deep nesting is refused with an error, on a 2 MiB stack (tokio's default), in
/// YAML flow and block style, TOML arrays and TOML dotted keys.
#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            for depth in [20usize, 33, 60, 5_000, 100_000] {
                let flow = format!("x-a: {}{}\n", "[".repeat(depth), "]".repeat(depth));
                let block: String = (0..depth.min(2_000))
                    .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
                    .collect();
                let toml = format!("a = {}{}\n", "[".repeat(depth), "]".repeat(depth));
                let dotted = format!(
                    "{} = 1\n",
                    (0..depth.min(2_000))
                        .map(|i| format!("k{i}"))
                        .collect::<Vec<_>>()
                        .join(".")
                );
                for y in [&flow, &block] {
                    let r = parse_yaml("deep.yaml", y);
                    assert_eq!(r.is_ok(), depth < 30, "yaml depth {depth}");
                    let _ = load_text("compose.yaml", format!("services: {{}}\n{y}").as_bytes());
                }
                for t in [&toml, &dotted] {
                    let r = parse_toml("deep.toml", t);
                    assert_eq!(r.is_ok(), depth < 30, "toml depth {depth}");
                    let _ = load_text("compose.toml", t.as_bytes());
                }
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
