//! compose-go's merge and unicity cases (tests/fixtures/merge_override.json), every one.
//!
//! Upstream compares the merged YAML tree, where mappings such as `environment`
//! have been turned into `KEY=VALUE` lists. Here both sides are loaded through the
//! same loader (no normalisation, no consistency checks, no path resolution) and the
//! typed projects compared, so `{FOO: BAR}` and `[FOO=BAR]` are the same value while
//! list order, unicity and per-field override rules still have to match exactly.

use perry_compose::{load, LoadOptions, Project};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn load_files(dir: &Path, files: &[(&str, &str)]) -> Result<Project, String> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for (name, content) in files {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        paths.push(p);
    }
    load(&LoadOptions {
        files: paths,
        project_name: Some("merge".into()),
        project_directory: Some(dir.to_path_buf()),
        // upstream's merge tests call the merge alone, without schema validation
        // (an override there may be partial, e.g. `ulimits.nproc: {soft: 1}`)
        validate: false,
        normalize: false,
        consistency: false,
        resolve_paths: false,
        ..LoadOptions::default()
    })
    .map_err(|e| e.to_string())
}

#[test]
fn every_merge_case() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/merge_override.json"
    ))
    .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for case in cases {
        let id = case["id"].as_str().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        for f in ["foo.env", "bar.env", "baz.env"] {
            std::fs::write(tmp.path().join(f), "").unwrap();
        }
        let s = |k: &str| case[k].as_str().unwrap_or_default();
        let got = match case["kind"].as_str().unwrap() {
            "unicity" => load_files(tmp.path(), &[("input.yaml", s("input"))]),
            _ => load_files(
                tmp.path(),
                &[("base.yaml", s("base")), ("override.yaml", s("override"))],
            ),
        };
        let want = load_files(tmp.path(), &[("expected.yaml", s("expected"))]);
        match (got, want) {
            (Ok(g), Ok(w)) if g == w => {}
            (Ok(g), Ok(w)) => failures.push(format!(
                "{id}:\n got  {}\n want {}",
                serde_json::to_string(&g).unwrap(),
                serde_json::to_string(&w).unwrap()
            )),
            (g, w) => failures.push(format!("{id}: got {g:?}, want {w:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
