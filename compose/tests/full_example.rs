//! compose-go's full example (tests/fixtures/full-example): loaded like upstream's
//! TestFullExample (no normalisation, no consistency checks, paths resolved), the
//! project must equal the expected canonical JSON.

use perry_compose::{load, LoadOptions};
use serde_json::Value;
use std::path::Path;

fn fixtures() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/full-example"
    ))
}

/// Drops `x-*` keys below the top level (compose-go's JSON leaves them out there).
fn strip_nested_extensions(v: &mut Value, depth: usize) {
    match v {
        Value::Object(m) => {
            if depth > 0 {
                m.retain(|k, _| !k.starts_with("x-"));
            }
            for (_, c) in m.iter_mut() {
                strip_nested_extensions(c, depth + 1);
            }
        }
        Value::Array(a) => a
            .iter_mut()
            .for_each(|c| strip_nested_extensions(c, depth + 1)),
        _ => {}
    }
}

fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => diff(&format!("{path}.{k}"), p, q, out),
                    (p, q) => out.push(format!("{path}.{k}: got {p:?}, want {q:?}")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}.{i}"), p, q, out);
            }
        }
        (p, q) if p != q => out.push(format!("{path}: got {p}, want {q}")),
        _ => {}
    }
}

#[test]
fn full_example_matches_expected_json() {
    let dir = fixtures();
    let home = "/home/tester";
    let case: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let mut environment = std::collections::BTreeMap::new();
    for (k, v) in case["env"].as_object().unwrap() {
        let v = v.as_str().unwrap().replace("@@HOME_DIR@@", home);
        environment.insert(k.clone(), v);
    }
    let project = load(&LoadOptions {
        files: vec![dir.join("full-example.yml")],
        environment,
        normalize: false,
        consistency: false,
        ..LoadOptions::default()
    })
    .unwrap();
    let mut got = serde_json::to_value(&project).unwrap();
    strip_nested_extensions(&mut got, 0);
    let want_text = std::fs::read_to_string(dir.join("full-example.expected.json"))
        .unwrap()
        .replace("@@WORKING_DIR@@", dir.to_str().unwrap())
        .replace("@@HOME_DIR@@", home);
    let want: Value = serde_json::from_str(&want_text).unwrap();
    let mut out = Vec::new();
    diff("", &got, &want, &mut out);
    assert!(out.is_empty(), "{}", out.join("\n"));
}

/// A parsed YAML tree as JSON (for a readable diff).
fn json_of(n: &perry_compose::Node) -> Value {
    use perry_compose::Value as V;
    match &n.value {
        V::Null => Value::Null,
        V::Bool(b) => Value::Bool(*b),
        V::Int(i) => Value::from(*i),
        V::Float(f) => Value::from(*f),
        V::String(s) => Value::String(s.clone()),
        V::Seq(items) => Value::Array(items.iter().map(json_of).collect()),
        V::Map(e) => Value::Object(e.iter().map(|(k, _, v)| (k.clone(), json_of(v))).collect()),
    }
}

/// `to_yaml` prints what compose-go's `config --format yaml` prints: the same tree
/// as full-example.expected.yaml (no `command: null`, `entrypoint: null`, `ipam: {}`).
#[test]
fn full_example_yaml_matches_expected_yaml() {
    let dir = fixtures();
    let home = "/home/tester";
    let case: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let environment = case["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().replace("@@HOME_DIR@@", home)))
        .collect();
    let project = load(&LoadOptions {
        files: vec![dir.join("full-example.yml")],
        environment,
        normalize: false,
        consistency: false,
        ..LoadOptions::default()
    })
    .unwrap();
    let printed = perry_compose::to_yaml(&project).unwrap();
    for absent in ["command: null", "entrypoint: null", "ipam: {}"] {
        assert!(!printed.contains(absent), "{absent:?} printed:\n{printed}");
    }
    let got = json_of(&perry_compose::parse_yaml("printed.yaml", &printed).unwrap());
    let want_text = std::fs::read_to_string(dir.join("full-example.expected.yaml"))
        .unwrap()
        .replace("@@WORKING_DIR@@", dir.to_str().unwrap())
        .replace("@@HOME_DIR@@", home);
    let want = json_of(&perry_compose::parse_yaml("expected.yaml", &want_text).unwrap());
    let mut out = Vec::new();
    diff("", &got, &want, &mut out);
    assert!(out.is_empty(), "{}", out.join("\n"));
    // JSON keeps compose-go's `null`s and `{}`
    let json = perry_compose::to_json(&project).unwrap();
    assert!(json.contains("\"command\": null") && json.contains("\"ipam\": {}"));
}
