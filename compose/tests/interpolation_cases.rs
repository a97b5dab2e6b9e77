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
