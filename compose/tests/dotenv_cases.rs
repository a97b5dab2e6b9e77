//! compose-go's dotenv cases (tests/fixtures/dotenv/dotenv.json), every one.
//!
//! Line, parse, error and expansion cases go through the parser directly; file and
//! multi-file cases also go through `load` (`env_files`), where the values are
//! observed as `environment` entries named without a value.

use perry_compose::{load, parse_dotenv, parse_dotenv_with_lookup, substitute, LoadOptions};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dotenv")
}

fn doc() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("dotenv.json")).unwrap()).unwrap()
}

fn strings(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn matches(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>, exact: bool) -> bool {
    if exact {
        got == want
    } else {
        want.iter().all(|(k, v)| got.get(k) == Some(v))
    }
}

#[test]
fn line_cases() {
    let mut failures = Vec::new();
    for c in doc()["line_cases"].as_array().unwrap() {
        let got = parse_dotenv(c["input"].as_str().unwrap());
        let key = c["key"].as_str().unwrap();
        let want = c["expected_value"].as_str().unwrap();
        match got {
            Ok(m) if m.get(key).map(String::as_str) == Some(want) => {}
            other => failures.push(format!("{}: {other:?}, want {want:?}", c["id"])),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn parse_cases() {
    let mut failures = Vec::new();
    for c in doc()["parse_cases"].as_array().unwrap() {
        let input = if c.get("generated").is_some() {
            (0..1000)
                .map(|i| format!("KEY{i}=VALUE{i}"))
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            c["input"].as_str().unwrap().to_string()
        };
        let env = strings(&c["lookup_env"]);
        let got = parse_dotenv_with_lookup(&input, &|k| env.get(k).cloned());
        let want = strings(&c["expected"]);
        let exact = c["exact"].as_bool().unwrap_or(false);
        match got {
            Ok(m) if matches(&m, &want, exact) => {
                if let Some(n) = c.get("expected_len").and_then(Value::as_u64) {
                    assert_eq!(m.len() as u64, n);
                }
            }
            other => failures.push(format!("{}: {other:?}, want {want:?}", c["id"])),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The one upstream case whose exact message we do not reproduce: compose-go
/// quotes the whole line (`"%!(EXTRA string)=foo"`), value included; we quote
/// the name only (up to `=`, `:` or a space), so a secret after `=` never reaches
/// the message. The case is checked for its line and wording instead.
const NAME_ONLY: (&str, &str) = (
    "TestParseVariable",
    "line 1: unexpected character \"%\" in variable name \"%!(EXTRA\"",
);

#[test]
fn error_cases() {
    let mut failures = Vec::new();
    for c in doc()["error_cases"].as_array().unwrap() {
        let got = parse_dotenv(c["input"].as_str().unwrap());
        let err = &c["expected_error"];
        let want = err
            .get("contains")
            .or_else(|| err.get("message"))
            .and_then(Value::as_str)
            .unwrap();
        if c["id"] == NAME_ONLY.0 {
            if got.as_ref().err().map(String::as_str) != Some(NAME_ONLY.1) {
                failures.push(format!("{}: {got:?}, want {:?}", c["id"], NAME_ONLY.1));
            }
            continue;
        }
        match got {
            Err(e) if e.contains(want) => {
                if let Some(m) = err.get("message").and_then(Value::as_str) {
                    if e != m {
                        failures.push(format!("{}: {e:?} != {m:?}", c["id"]));
                    }
                }
            }
            other => failures.push(format!("{}: {other:?}, want error {want:?}", c["id"])),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn expand_cases() {
    let mut failures = Vec::new();
    for c in doc()["expand_cases"].as_array().unwrap() {
        let map = strings(&c["env_map"]);
        let lookup = strings(&c["lookup_env"]);
        let got = substitute(c["input"].as_str().unwrap(), &|k| {
            lookup.get(k).or_else(|| map.get(k)).cloned()
        });
        match (got, c.get("expected_error")) {
            (Err(e), Some(err)) if err["message"].as_str() == Some(&e.to_string()) => {}
            (Ok(v), None) if c["expected"].as_str() == Some(&v) => {}
            (got, _) => failures.push(format!("{}: {got:?}", c["id"])),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Loads a one-service project whose `environment` names `keys` without values,
/// with `env_files` as `--env-file`, and returns what those keys resolved to.
fn through_load(
    env_files: Vec<PathBuf>,
    shell: BTreeMap<String, String>,
    keys: &[String],
) -> Result<BTreeMap<String, String>, String> {
    let tmp = tempfile::tempdir().unwrap();
    let mut yaml = String::from("services:\n  s:\n    image: x\n    environment:\n");
    for k in keys {
        yaml.push_str(&format!("      - {k:?}\n"));
    }
    if keys.is_empty() {
        yaml.push_str("      {}\n");
    }
    let file = tmp.path().join("compose.yaml");
    std::fs::write(&file, yaml).unwrap();
    let p = load(&LoadOptions {
        files: vec![file],
        env_files,
        environment: shell.clone(),
        ..LoadOptions::default()
    })
    .map_err(|e| e.to_string())?;
    Ok(p.services["s"]
        .environment
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
        .filter(|(k, v)| shell.get(k) != Some(v) || keys.contains(k))
        .collect())
}

#[test]
fn file_cases() {
    let mut failures = Vec::new();
    for c in doc()["file_cases"].as_array().unwrap() {
        let id = c["id"].as_str().unwrap();
        let path = dir().join(c["file"].as_str().unwrap());
        let os_env = strings(&c["os_env"]);
        if c.get("expected_error").is_some() {
            // the one error case reads a directory: upstream "read <dir>: is a directory"
            let clean: PathBuf = path.components().collect();
            let want = format!("{}: files is a directory", clean.display());
            match through_load(vec![path.clone()], os_env, &[]) {
                Err(e) if e == want => {}
                Err(e) => failures.push(format!("{id}: {e:?}, want {want:?}")),
                Ok(v) => failures.push(format!("{id}: loaded {v:?}, want an error")),
            }
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mode = c["mode"].as_str().unwrap();
        let parsed = if mode == "ReadWithLookup" {
            parse_dotenv_with_lookup(&text, &|k| os_env.get(k).cloned())
        } else {
            parse_dotenv(&text)
        };
        let Ok(mut got) = parsed else {
            failures.push(format!("{id}: {parsed:?}"));
            continue;
        };
        // godotenv's Read drops keys starting with a digit
        got.retain(|k, _| !k.trim_start().starts_with(|c: char| c.is_ascii_digit()));
        let want = strings(&c["expected"]);
        if !matches(&got, &want, c["exact"].as_bool().unwrap_or(false)) {
            failures.push(format!("{id}: {got:?}, want {want:?}"));
        }
        // and through the loader, as --env-file (the shell still wins)
        let keys: Vec<String> = want.keys().cloned().collect();
        match through_load(vec![path.clone()], os_env.clone(), &keys) {
            Ok(m) => {
                for (k, v) in &want {
                    let expect = os_env.get(k).unwrap_or(v);
                    if m.get(k) != Some(expect) {
                        failures.push(format!(
                            "{id} (load): {k} = {:?}, want {expect:?}",
                            m.get(k)
                        ));
                    }
                }
            }
            Err(e) => failures.push(format!("{id} (load): {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn multi_file_cases() {
    let mut failures = Vec::new();
    for c in doc()["multi_file_cases"].as_array().unwrap() {
        let id = c["id"].as_str().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        for (name, content) in c["files"].as_object().unwrap() {
            let p = tmp.path().join(name);
            match content.as_str() {
                Some(text) => std::fs::write(p, text).unwrap(),
                None => std::fs::create_dir_all(p).unwrap(),
            }
        }
        let files: Vec<PathBuf> = c["order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| tmp.path().join(n.as_str().unwrap()))
            .collect();
        let want = strings(&c["expected"]);
        let keys: Vec<String> = want.keys().cloned().collect();
        let got = through_load(files, strings(&c["current_env"]), &keys);
        match (got, c.get("expected_error")) {
            (Err(e), Some(err)) => {
                let suffix = err["suffix"].as_str().unwrap_or_default();
                if !e.ends_with(suffix) {
                    failures.push(format!("{id}: {e:?} does not end with {suffix:?}"));
                }
            }
            (Ok(m), None) if m == want => {}
            (got, _) => failures.push(format!("{id}: {got:?}, want {want:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
