//! compose-go's substitution cases (tests/fixtures/interpolation.json), every one.

use perry_compose::substitute;
use serde_json::Value;

#[test]
fn every_string_case() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/interpolation.json"
    ))
    .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cases = doc["string_cases"].as_array().unwrap();
    assert!(cases.len() >= 50);
    let mut failures = Vec::new();
    for case in cases {
        let id = case["id"].as_str().unwrap();
        let env = case["env"].as_object().unwrap().clone();
        let lookup = |k: &str| env.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let input = case["input"].as_str().unwrap();
        let got = substitute(input, &lookup);
        match (&case["expected"], &case["expected_error"], got) {
            (Value::String(want), _, Ok(got)) if *want == got => {}
            (_, Value::Object(err), Err(e)) => {
                let msg = match case["path"].as_str() {
                    Some(p) => format!("error while interpolating {p}: {e}"),
                    None => e.to_string(),
                };
                let ok = match (err.get("contains"), err.get("message")) {
                    (Some(Value::String(c)), _) => msg.contains(c.as_str()),
                    (_, Some(Value::String(m))) => msg == *m,
                    _ => false,
                };
                if !ok {
                    failures.push(format!("{id}: error {msg:?} vs {err:?}"));
                }
            }
            (want, err, got) => failures.push(format!("{id}: got {got:?}, want {want} / {err}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn doc() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/interpolation.json"
        ))
        .unwrap(),
    )
    .unwrap()
}

/// compose-go's TestExtractVariables: every variable of a tree, with its default,
/// presence value and whether it is required.
#[test]
fn every_extract_variables_case() {
    let cases = doc()["extract_variables_cases"].as_array().unwrap().clone();
    assert!(cases.len() >= 9);
    for case in cases {
        let id = case["id"].as_str().unwrap();
        // JSON is YAML: the input goes through the same parser as a compose file
        let tree = perry_compose::parse_yaml("case.yaml", &case["input"].to_string()).unwrap();
        let got = perry_compose::extract_variables(&tree);
        let want = case["expected"].as_object().unwrap();
        assert_eq!(got.len(), want.len(), "{id}: {got:?}");
        for (name, w) in want {
            let g = got
                .get(name)
                .unwrap_or_else(|| panic!("{id}: {name} missing"));
            assert_eq!(g.name, w["Name"].as_str().unwrap(), "{id}");
            assert_eq!(g.default_value, w["DefaultValue"].as_str().unwrap(), "{id}");
            assert_eq!(
                g.presence_value,
                w["PresenceValue"].as_str().unwrap(),
                "{id}"
            );
            assert_eq!(g.required, w["Required"].as_bool().unwrap(), "{id}");
        }
    }
}

/// compose-go's TestSubstitutionFunctionChoice: the operator is the first of `:?`,
/// `?`, `:-`, `-`, `:+`, `+` after the name, and everything after it is the argument
/// (so `${VARNAME?va-lu+e:?e}` is a `?` whose message is `va-lu+e:?e`).
#[test]
fn every_operator_choice_case() {
    let cases = doc()["operator_choice_cases"].as_array().unwrap().clone();
    assert_eq!(cases.len(), 6);
    let unset = |_: &str| None::<String>;
    let set = |_: &str| Some("x".to_string());
    let empty = |_: &str| Some(String::new());
    for case in cases {
        let id = case["id"].as_str().unwrap();
        let template = case["template"].as_str().unwrap();
        let op = case["operator"].as_str().unwrap();
        let body = case["braced_body"].as_str().unwrap();
        let arg = body
            .strip_prefix("VARNAME")
            .unwrap()
            .strip_prefix(op)
            .unwrap();
        // the argument has no variables here, so it is its own substitution
        match op {
            ":?" | "?" => {
                let e = substitute(template, &unset).unwrap_err();
                assert_eq!(
                    e.to_string(),
                    format!("required variable VARNAME is missing a value: {arg}"),
                    "{id}"
                );
                assert_eq!(substitute(template, &empty).is_err(), op == ":?", "{id}");
                assert_eq!(substitute(template, &set).unwrap(), "x", "{id}");
            }
            ":-" | "-" => {
                assert_eq!(substitute(template, &unset).unwrap(), arg, "{id}");
                let on_empty = if op == ":-" { arg } else { "" };
                assert_eq!(substitute(template, &empty).unwrap(), on_empty, "{id}");
                assert_eq!(substitute(template, &set).unwrap(), "x", "{id}");
            }
            _ => {
                assert_eq!(substitute(template, &unset).unwrap(), "", "{id}");
                let on_empty = if op == ":+" { "" } else { arg };
                assert_eq!(substitute(template, &empty).unwrap(), on_empty, "{id}");
                assert_eq!(substitute(template, &set).unwrap(), arg, "{id}");
            }
        }
        let tree = perry_compose::parse_yaml("t.yaml", &format!("a: {template:?}")).unwrap();
        let v = &perry_compose::extract_variables(&tree)["VARNAME"];
        assert_eq!(v.required, op.ends_with('?'), "{id}");
        let wanted_default = if op.ends_with('-') { arg } else { "" };
        let wanted_presence = if op.ends_with('+') { arg } else { "" };
        assert_eq!(v.default_value, wanted_default, "{id}");
        assert_eq!(v.presence_value, wanted_presence, "{id}");
    }
}
