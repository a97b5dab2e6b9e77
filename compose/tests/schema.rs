//! Validation against the compose-spec JSON Schema (tests/fixtures/compose-spec.json,
//! shipped in the crate as `schema/compose-spec.json`): `${VAR}` in typed fields
//! passes (tests/fixtures/schema/using-variables.yaml), violations are refused with
//! compose-go's wording, located at the file, line, column and key.

use perry_compose::{
    load, parse_toml, parse_yaml, validate_schema, LoadError, LoadOptions, COMPOSE_SPEC_SCHEMA,
};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn the_shipped_schema_is_the_reference_one() {
    let reference = std::fs::read_to_string(fixtures().join("compose-spec.json")).unwrap();
    assert_eq!(COMPOSE_SPEC_SCHEMA, reference);
}

#[test]
fn variables_in_typed_fields_pass_before_interpolation() {
    let text = std::fs::read_to_string(fixtures().join("schema/using-variables.yaml")).unwrap();
    let tree = parse_yaml("using-variables.yaml", &text).unwrap();
    assert_eq!(validate_schema(&tree), Ok(()));
    // and through the loader with interpolation off (typing is what refuses
    // `replicas: ${VARIABLE}` then, not the schema)
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("compose.yaml");
    std::fs::write(&f, &text).unwrap();
    let e = load(&LoadOptions {
        files: vec![f],
        interpolate: false,
        ..LoadOptions::default()
    })
    .unwrap_err();
    assert!(
        !e.to_string().contains(" must be a "),
        "a schema error for a variable: {e}"
    );
}

#[test]
fn full_example_and_every_testdata_file_pass() {
    let mut files = vec![fixtures().join("full-example/full-example.yml")];
    let mut stack = vec![fixtures().join("loader/testdata")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                files.push(p);
            }
        }
    }
    assert!(files.len() > 20);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let tree = parse_yaml(&f.display().to_string(), &text).unwrap();
        if tree.value == perry_compose::Value::Null {
            continue; // empty.yaml: refused by the loader before validation
        }
        if let Err(e) = validate_schema(&tree) {
            // base.yaml keeps a `nil:` service on purpose (extends only reads
            // other services of it, and compose-go validates the merged result)
            assert!(f.ends_with("extends/base.yaml"), "{}: {e:?}", f.display());
        }
    }
}

struct Case {
    yaml: &'static str,
    line: u64,
    column: u64,
    key: &'static str,
    text: &'static str,
}

fn load_text(dir: &Path, name: &str, text: &str) -> Result<perry_compose::Project, LoadError> {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    load(&LoadOptions {
        files: vec![f],
        ..LoadOptions::default()
    })
}

fn assert_located(e: &LoadError, file: &Path, c: &Case) {
    let msg = e.to_string();
    let prefix = format!("{}:{}:{}: {}: ", file.display(), c.line, c.column, c.key);
    assert!(
        msg.starts_with(&prefix),
        "{msg:?} should start with {prefix:?}"
    );
    assert!(msg.contains(c.text), "{msg:?} should contain {:?}", c.text);
    assert!(matches!(e, LoadError::Invalid(_)), "{e:?}");
    let loc = e.location().unwrap();
    assert_eq!(
        (loc.line, loc.column, loc.path.as_str()),
        (c.line, c.column, c.key)
    );
}

/// compose-go's own assertions (loader_test.go, schema_test.go), located.
#[test]
fn violations_are_located_in_compose_go_words() {
    let cases = [
        Case {
            yaml: "services:\n  foo:\n    image: 123\n",
            line: 3,
            column: 12,
            key: "services.foo.image",
            text: "services.foo.image must be a string",
        },
        Case {
            yaml: "services:\n  foo: bar\n",
            line: 2,
            column: 8,
            key: "services.foo",
            text: "services.foo must be a mapping",
        },
        Case {
            yaml: "services: [a]\n",
            line: 1,
            column: 11,
            key: "services",
            text: "services must be a mapping",
        },
        Case {
            yaml: "services:\n  dict-env:\n    image: busybox\n    environment:\n      FOO: [1]\n",
            line: 5,
            column: 12,
            key: "services.dict-env.environment.FOO",
            text: "services.dict-env.environment.FOO must be a boolean, null, number or string",
        },
        Case {
            yaml: "services:\n  dict-env:\n    image: busybox\n    environment: FOO=1\n",
            line: 4,
            column: 18,
            key: "services.dict-env.environment",
            text: "services.dict-env.environment must be a mapping",
        },
        Case {
            yaml: "services:\n  tmpfs:\n    image: nginx\n    volumes:\n      - type: tmpfs\n        target: /app\n        foo: bar\n",
            line: 7,
            column: 9,
            key: "services.tmpfs.volumes.0.foo",
            text: "services.tmpfs.volumes.0 additional properties 'foo' not allowed",
        },
        Case {
            yaml: "services:\n  tmpfs:\n    image: nginx\n    volumes:\n      - type: tmpfs\n        target: /app\n        tmpfs:\n          size: -1\n",
            line: 8,
            column: 17,
            key: "services.tmpfs.volumes.0.tmpfs.size",
            text: "services.tmpfs.volumes.0.tmpfs.size must be greater than or equal to 0",
        },
        Case {
            yaml: "services:\n  frontend:\n    image: x\n    develop:\n      watch:\n        - path: ./src\n",
            line: 6,
            column: 11,
            key: "services.frontend.develop.watch.0",
            text: "services.frontend.develop.watch.0 missing property 'action'",
        },
        Case {
            yaml: "services:\n  gpu:\n    image: x\n    deploy:\n      resources:\n        reservations:\n          devices:\n            - driver: nvidia\n",
            line: 8,
            column: 15,
            key: "services.gpu.deploy.resources.reservations.devices.0",
            text: "missing property 'capabilities'",
        },
        Case {
            yaml: "services:\n  web:\n    image: nginx\n    impossible: true\n",
            line: 4,
            column: 5,
            key: "services.web.impossible",
            text: "additional properties 'impossible' not allowed",
        },
        Case {
            yaml: "services:\n  web:\n    image: nginx\nhelicopters: {}\n",
            line: 4,
            column: 1,
            key: "helicopters",
            text: "additional properties 'helicopters' not allowed",
        },
        Case {
            yaml: "services:\n  web:\n    image: nginx\n    security_opt: [a, b, a]\n",
            line: 4,
            column: 26,
            key: "services.web.security_opt",
            text: "items at 0 and 2 are equal",
        },
        Case {
            yaml: "services:\n  web:\n    image: nginx\n    pull_policy: sometimes\n",
            line: 4,
            column: 18,
            key: "services.web.pull_policy",
            text: "does not match pattern",
        },
        Case {
            yaml: "services:\n  web:\n    image: nginx\n    depends_on:\n      db:\n        required: true\n  db:\n    image: pg\n",
            line: 6,
            column: 9,
            key: "services.web.depends_on.db",
            text: "missing property 'condition'",
        },
        Case {
            yaml: "services:\n  \"we b\":\n    image: nginx\n",
            line: 2,
            column: 3,
            key: "services.we b",
            text: "services additional properties 'we b' not allowed",
        },
    ];
    for c in cases {
        let d = tempfile::tempdir().unwrap();
        let e = load_text(d.path(), "compose.yaml", c.yaml).unwrap_err();
        assert_located(&e, &d.path().join("compose.yaml"), &c);
    }
}

#[test]
fn unknown_keys_suggest_the_closest_one() {
    let d = tempfile::tempdir().unwrap();
    let e = load_text(
        d.path(),
        "compose.yaml",
        "services:\n  web:\n    image: nginx\n    healthcheck:\n      test: [CMD, \"true\"]\n      intervall: 5s\n",
    )
    .unwrap_err();
    let c = Case {
        yaml: "",
        line: 6,
        column: 7,
        key: "services.web.healthcheck.intervall",
        text: "services.web.healthcheck additional properties 'intervall' not allowed (did you mean \"interval\"?)",
    };
    assert_located(&e, &d.path().join("compose.yaml"), &c);
}

#[test]
fn toml_files_are_validated_with_toml_positions() {
    let d = tempfile::tempdir().unwrap();
    let e = load_text(
        d.path(),
        "compose.toml",
        "[services.web]\nimage = \"nginx\"\nread_only = [true]\n",
    )
    .unwrap_err();
    let loc = e.location().unwrap();
    assert_eq!(loc.path, "services.web.read_only");
    assert_eq!(loc.line, 3);
    assert!(loc.column > 0);
    assert!(
        e.to_string()
            .contains("services.web.read_only must be a boolean or string"),
        "{e}"
    );
    let tree = parse_toml("x.toml", "[services.web]\nimage = 1\n").unwrap();
    assert_eq!(
        validate_schema(&tree).unwrap_err().message,
        "services.web.image must be a string"
    );
}

#[test]
fn interpolated_values_are_validated() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("compose.yaml");
    // a string that interpolates to a string passes; `${VAR}` is a string for the
    // schema whatever it holds (compose-go casts only afterwards)
    std::fs::write(
        &f,
        "services:\n  web:\n    image: nginx\n    read_only: ${RO}\n    pull_policy: ${PP}\n",
    )
    .unwrap();
    let run = |pp: &str| {
        load(&LoadOptions {
            files: vec![f.clone()],
            environment: [("RO", "true"), ("PP", pp)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..LoadOptions::default()
        })
    };
    assert!(run("always").unwrap().services["web"].read_only);
    // the schema's pattern is unanchored, as in compose-go: "whenever" contains "never"
    assert!(run("whenever").is_ok());
    let e = run("occasionally").unwrap_err();
    assert_eq!(e.location().unwrap().path, "services.web.pull_policy");
    assert_eq!(e.location().unwrap().line, 5);
}

#[test]
fn repeated_entries_of_deduplicated_lists_are_merged_not_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = load_text(
        d.path(),
        "compose.yaml",
        "services:\n  web:\n    image: nginx\n    ports: [\"80:80\", \"80:80\"]\n    cap_add: [NET_ADMIN, NET_ADMIN]\n",
    )
    .unwrap();
    assert_eq!(p.services["web"].ports.len(), 1);
    assert_eq!(p.services["web"].cap_add, ["NET_ADMIN"]);
}

#[test]
fn reset_values_are_not_validated_and_validation_can_be_skipped() {
    let d = tempfile::tempdir().unwrap();
    let p = load_text(
        d.path(),
        "compose.yaml",
        "services:\n  web:\n    image: nginx\n    ports: !reset 12\n",
    )
    .unwrap();
    assert!(p.services["web"].ports.is_empty());
    let f = d.path().join("bad.yaml");
    std::fs::write(
        &f,
        "services:\n  web:\n    image: nginx\n    security_opt: [a, a]\n",
    )
    .unwrap();
    let opts = LoadOptions {
        files: vec![f],
        ..LoadOptions::default()
    };
    assert!(load(&opts).is_err());
    let p = load(&LoadOptions {
        validate: false,
        ..opts
    })
    .unwrap();
    assert_eq!(p.services["web"].security_opt, ["a", "a"]);
}

#[test]
fn errors_in_an_override_file_name_that_file() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("compose.yaml");
    let over = d.path().join("compose.override.yaml");
    std::fs::write(&base, "services:\n  web:\n    image: nginx\n").unwrap();
    std::fs::write(&over, "services:\n  web:\n    imgae: nginx:2\n").unwrap();
    let e = load(&LoadOptions {
        files: vec![base, over.clone()],
        ..LoadOptions::default()
    })
    .unwrap_err();
    assert_located(
        &e,
        &over,
        &Case {
            yaml: "",
            line: 3,
            column: 5,
            key: "services.web.imgae",
            text: "(did you mean \"image\"?)",
        },
    );
}
