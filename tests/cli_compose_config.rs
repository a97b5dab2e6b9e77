//! `perry-sandbox compose … config` through the real binary, on the reference cases of
//! `compose/tests/fixtures` (a copy of `shared/data/compose`): the printed JSON must be
//! what compose-go's `docker compose config --format json` prints (the full example's
//! expected JSON, the loader cases' checks, the merge cases' expected models), the YAML
//! must load back to the same model, and invalid input exits 2 with
//! `file:line:col: path: message`.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compose/tests/fixtures")
}

/// The binary with a clean environment: only `PATH`, `HOME` and `env`.
fn perry(dir: &Path, env: &BTreeMap<String, String>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_perry-sandbox"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/home/tester")
        .current_dir(dir)
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn json_of(out: &Output) -> Result<Value, String> {
    if out.status.success() {
        serde_json::from_slice(&out.stdout).map_err(|e| format!("not JSON ({e}): {out:?}"))
    } else {
        Err(format!(
            "exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
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

fn full_example_env() -> BTreeMap<String, String> {
    let case: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("full-example/case.json")).unwrap(),
    )
    .unwrap();
    case["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = v.as_str().unwrap().replace("@@HOME_DIR@@", "/home/tester");
            (k.clone(), v)
        })
        .collect()
}

/// Byte for byte compose-go's expected JSON, once parsed: no `x-*` below the top
/// level, `command: null`, `ipam: {}`, durations as Go prints them, absolute paths.
#[test]
fn full_example_json_is_compose_go_json() {
    let dir = fixtures().join("full-example");
    let out = perry(
        &dir,
        &full_example_env(),
        &[
            "compose",
            "-f",
            "full-example.yml",
            "config",
            "--format",
            "json",
            "--no-normalize",
            "--no-consistency",
        ],
    );
    let got = json_of(&out).unwrap();
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("full-example.expected.json"))
            .unwrap()
            .replace("@@WORKING_DIR@@", dir.to_str().unwrap())
            .replace("@@HOME_DIR@@", "/home/tester"),
    )
    .unwrap();
    let mut d = Vec::new();
    diff("", &got, &want, &mut d);
    assert!(d.is_empty(), "{}", d.join("\n"));
    // without --no-consistency the same file is refused like compose-go refuses it
    let out = perry(
        &dir,
        &full_example_env(),
        &["compose", "-f", "full-example.yml", "config"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:",
            dir.join("full-example.yml").to_str().unwrap()
        )) && err.contains("services.foo.network_mode"),
        "{err}"
    );
}

/// A parsed YAML tree as JSON (for a readable diff).
fn yaml_json(n: &perry_compose::Node) -> Value {
    use perry_compose::Value as V;
    match &n.value {
        V::Null => Value::Null,
        V::Bool(b) => Value::Bool(*b),
        V::Int(i) => Value::from(*i),
        V::Float(f) => Value::from(*f),
        V::String(s) => Value::String(s.clone()),
        V::Seq(items) => Value::Array(items.iter().map(yaml_json).collect()),
        V::Map(e) => Value::Object(
            e.iter()
                .map(|(k, _, v)| (k.clone(), yaml_json(v)))
                .collect(),
        ),
    }
}

/// `config --format yaml` prints the tree of full-example.expected.yaml (compose-go
/// leaves out unset `command`/`entrypoint` and empty `ipam` in YAML).
#[test]
fn full_example_yaml_is_compose_go_yaml() {
    let dir = fixtures().join("full-example");
    let out = perry(
        &dir,
        &full_example_env(),
        &[
            "compose",
            "-f",
            "full-example.yml",
            "config",
            "--format",
            "yaml",
            "--no-normalize",
            "--no-consistency",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    let got = yaml_json(&perry_compose::parse_yaml("printed.yaml", &printed).unwrap());
    let want_text = std::fs::read_to_string(dir.join("full-example.expected.yaml"))
        .unwrap()
        .replace("@@WORKING_DIR@@", dir.to_str().unwrap())
        .replace("@@HOME_DIR@@", "/home/tester");
    let want = yaml_json(&perry_compose::parse_yaml("expected.yaml", &want_text).unwrap());
    let mut d = Vec::new();
    diff("", &got, &want, &mut d);
    assert!(d.is_empty(), "{}", d.join("\n"));
}

/// `config --format yaml` printed, then read back (`--no-interpolate`: it is already
/// interpolated), prints the same JSON.
#[test]
fn yaml_output_loads_back_to_the_same_model() {
    let dir = fixtures().join("full-example");
    let env = full_example_env();
    let args = |fmt: &'static str, file: &'static str| {
        vec![
            "compose",
            "-f",
            file,
            "--project-directory",
            ".",
            "config",
            "--format",
            fmt,
            "--no-consistency",
        ]
    };
    let yaml = perry(&dir, &env, &args("yaml", "full-example.yml"));
    assert!(yaml.status.success(), "{yaml:?}");
    let first = json_of(&perry(&dir, &env, &args("json", "full-example.yml"))).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&dir, tmp.path());
    std::fs::write(tmp.path().join("printed.yaml"), &yaml.stdout).unwrap();
    let mut a = args("json", "printed.yaml");
    a.push("--no-interpolate");
    let again = json_of(&perry(tmp.path(), &env, &a)).unwrap();
    // printed paths are absolute (to the fixtures), so they are the same
    let mut d = Vec::new();
    diff("", &again, &first, &mut d);
    assert!(d.is_empty(), "{}", d.join("\n"));
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn same(got: &Value, want: &Value, root: &Path) -> bool {
    match (got, want) {
        (Value::String(g), Value::String(w)) if g != w && !w.starts_with('/') => {
            let abs = root.join(w);
            g == abs.to_string_lossy().trim_end_matches("/.")
        }
        (Value::Object(g), Value::Object(w)) => {
            g.len() == w.len()
                && w.iter()
                    .all(|(k, wv)| g.get(k).is_some_and(|gv| same(gv, wv, root)))
        }
        _ => got == want,
    }
}

/// One loader case through the binary: `Ok(json, root)` or `Err(stderr)`.
fn run_loader_case(case: &Value) -> Result<(Value, PathBuf), String> {
    let tmp = tempfile::tempdir().unwrap().keep();
    let root = tmp.join("loader");
    copy_dir(&fixtures().join("loader"), &root);
    let wd = case["working_dir"].as_str().unwrap_or(".");
    let work = if wd.starts_with("fixtures/loader/testdata/include")
        || wd.starts_with("testdata/include")
    {
        root.join("testdata/include")
    } else if wd.starts_with("fixtures/loader") {
        root.clone()
    } else {
        let d = tmp.join("work");
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    if let Some(Value::Object(extra)) = case.get("extra_files") {
        for (name, content) in extra {
            let p = work.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content.as_str().unwrap()).unwrap();
        }
    }
    let mut args: Vec<String> = vec!["compose".into()];
    for (i, f) in case["files"].as_array().unwrap().iter().enumerate() {
        let name = f["name"].as_str().unwrap_or("");
        let path = match f["content"].as_str() {
            None => {
                let base = if wd.starts_with("testdata/include") || wd.contains("(absolute)") {
                    root.clone()
                } else {
                    work.clone()
                };
                base.join(name)
            }
            Some(content) => {
                let fname = if name.ends_with(".yml") || name.ends_with(".yaml") {
                    name.to_string()
                } else {
                    format!("inline-{i}.yaml")
                };
                let p = work.join(fname);
                std::fs::write(&p, content).unwrap();
                p
            }
        };
        args.push("-f".into());
        args.push(path.to_string_lossy().into());
    }
    args.push("--project-directory".into());
    args.push(work.to_string_lossy().into());
    let o = &case["options"];
    let flag = |k: &str| o.get(k).and_then(Value::as_bool).unwrap_or(false);
    if let Some(p) = o.get("project_name").and_then(Value::as_str) {
        args.push("-p".into());
        args.push(p.into());
    }
    for p in o
        .get("Profiles")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        args.push("--profile".into());
        args.push(p.as_str().unwrap().into());
    }
    args.extend(["config", "--format", "json"].map(String::from));
    if flag("SkipNormalization") {
        args.push("--no-normalize".into());
    }
    if flag("SkipConsistencyCheck") {
        args.push("--no-consistency".into());
    }
    if o.get("ResolvePaths").and_then(Value::as_bool) == Some(false) {
        args.push("--no-path-resolution".into());
    }
    let env: BTreeMap<String, String> = case["env"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = perry(&work, &env, &argv);
    let result = match json_of(&out) {
        Ok(v) => Ok((v, root.clone())),
        Err(e) => {
            assert_eq!(out.status.code(), Some(2), "{e}");
            Err(e)
        }
    };
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Every loader case that needs no library-only option (`SkipValidation` has no
/// `docker compose config` flag), through `perry-sandbox compose … config --format json`.
#[test]
fn loader_cases_through_the_binary() {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("loader/loader_cases.json")).unwrap(),
    )
    .unwrap();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in doc["cases"].as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        if case["options"].get("SkipValidation").is_some() {
            continue;
        }
        ran += 1;
        match (&case["expected_error"], run_loader_case(case)) {
            (Value::Object(err), Err(msg)) => {
                let want = err
                    .get("contains")
                    .or_else(|| err.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !msg.contains(want) {
                    failures.push(format!("{id}: {msg:?} does not contain {want:?}"));
                }
            }
            (Value::Object(_), Ok(_)) => failures.push(format!("{id}: loaded, want an error")),
            (_, Err(msg)) => failures.push(format!("{id}: {msg}")),
            (_, Ok((json, root))) => {
                for c in case["checks"].as_array().into_iter().flatten() {
                    let Some(path) = c["path"].as_str() else {
                        continue; // extends_events: a compose-go listener count
                    };
                    let got = lookup(&json, path);
                    let ok = if let Some(want) = c.get("equals") {
                        got.is_some_and(|g| same(g, want, &root))
                    } else if c.get("absent").is_some() {
                        got.is_none()
                    } else if let Some(n) = c.get("len").and_then(Value::as_u64) {
                        got.and_then(|g| match g {
                            Value::Array(a) => Some(a.len()),
                            Value::Object(m) => Some(m.len()),
                            _ => None,
                        }) == Some(n as usize)
                    } else if let Some(n) = c.get("len_or_absent").and_then(Value::as_u64) {
                        match got {
                            None => true,
                            Some(Value::Array(a)) => a.len() == n as usize,
                            Some(Value::Object(m)) => m.len() == n as usize,
                            _ => false,
                        }
                    } else if c.get("falsy").is_some() {
                        matches!(got, None | Some(Value::Bool(false)) | Some(Value::Null))
                    } else if c.get("null_or_absent").is_some() {
                        matches!(got, None | Some(Value::Null))
                    } else if c.get("present").is_some() {
                        !matches!(got, None | Some(Value::Null))
                    } else {
                        false
                    };
                    if !ok {
                        failures.push(format!("{id}: check {c} failed, got {got:?}"));
                    }
                }
            }
        }
    }
    assert!(ran >= 24, "only {ran} cases ran");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The merge cases: `-f base -f override` prints what `-f expected` prints (both
/// `--no-normalize --no-consistency --no-path-resolution`, like compose-go's merge).
#[test]
fn merge_cases_through_the_binary() {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("merge_override.json")).unwrap(),
    )
    .unwrap();
    let mut failures = Vec::new();
    let mut compared = 0;
    for case in doc["cases"].as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        for f in ["foo.env", "bar.env", "baz.env"] {
            std::fs::write(tmp.path().join(f), "").unwrap();
        }
        let s = |k: &str| case[k].as_str().unwrap_or_default();
        let run = |files: &[(&str, &str)]| {
            let mut args = vec!["compose", "-p", "merge"];
            for (name, text) in files {
                std::fs::write(tmp.path().join(name), text).unwrap();
                args.extend(["-f", name]);
            }
            args.extend([
                "config",
                "--format",
                "json",
                "--no-normalize",
                "--no-consistency",
                "--no-path-resolution",
            ]);
            json_of(&perry(tmp.path(), &BTreeMap::new(), &args))
        };
        let got = match case["kind"].as_str().unwrap() {
            "unicity" => run(&[("input.yaml", s("input"))]),
            _ => run(&[("base.yaml", s("base")), ("override.yaml", s("override"))]),
        };
        // the expected model, read by the library without schema validation: some
        // are compose-go merge outputs that are not valid input (`models: {llm: null}`)
        std::fs::write(tmp.path().join("expected.yaml"), s("expected")).unwrap();
        let expected = |validate: bool| {
            perry_compose::load(&perry_compose::LoadOptions {
                files: vec![tmp.path().join("expected.yaml")],
                project_name: Some("merge".into()),
                project_directory: Some(tmp.path().to_path_buf()),
                validate,
                normalize: false,
                consistency: false,
                resolve_paths: false,
                ..perry_compose::LoadOptions::default()
            })
        };
        let want: Value =
            serde_json::from_str(&perry_compose::to_json(&expected(false).unwrap()).unwrap())
                .unwrap();
        match got {
            Ok(g) => {
                compared += 1;
                if g != want {
                    failures.push(format!("{id}:\n got  {g}\n want {want}"));
                }
            }
            // refused: only right when the merged result is itself invalid compose
            // (compose-go validates the merge result too)
            Err(e) if expected(true).is_err() => {
                assert!(e.contains("exit Some(2)"), "{e}");
            }
            Err(e) => failures.push(format!("{id}: {e}")),
        }
    }
    assert!(compared >= 30, "only {compared} compared");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_input_exits_2_with_file_line_column_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("compose.yaml"),
        "services:\n  web:\n    image: nginx\n    prots: [\"80\"]\n",
    )
    .unwrap();
    let out = perry(tmp.path(), &BTreeMap::new(), &["compose", "config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "{}:4:5: services.web.prots: services.web additional properties 'prots' not allowed (did you mean \"ports\"?)",
        tmp.path().join("compose.yaml").display()
    );
    assert!(err.contains(&want), "{err}");
    // a missing required variable names it, the file, line and column
    std::fs::write(
        tmp.path().join("compose.yaml"),
        "services:\n  web:\n    image: \"nginx:${TAG:?pick a tag}\"\n",
    )
    .unwrap();
    let out = perry(tmp.path(), &BTreeMap::new(), &["compose", "config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:3:12: services.web.image: required variable TAG is missing a value: pick a tag",
            tmp.path().join("compose.yaml").display()
        )),
        "{err}"
    );
}

/// A variable's value never reaches stderr: an interpolated `read_only` (from the
/// shell) and a malformed `.env` line (its value) are refused naming file, line,
/// column and key, with the value's bytes nowhere in the output.
#[test]
fn secrets_never_appear_in_errors() {
    const SECRET: &str = "hunter2secret";
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("compose.yaml");
    std::fs::write(
        &file,
        "services:\n  web:\n    image: nginx\n    read_only: ${S}\n",
    )
    .unwrap();
    let env = BTreeMap::from([("S".to_string(), SECRET.to_string())]);
    let out = perry(tmp.path(), &env, &["compose", "config"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:4:16: services.web.read_only: (interpolated value) is not a boolean",
            file.display()
        )),
        "{err}"
    );
    assert!(!format!("{out:?}").contains(SECRET), "{out:?}");
    std::fs::write(&file, "services:\n  web:\n    image: nginx\n").unwrap();
    std::fs::write(tmp.path().join(".env"), format!("API%KEY={SECRET}\n")).unwrap();
    let out = perry(tmp.path(), &BTreeMap::new(), &["compose", "config"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:1: unexpected character \"%\" in variable name \"API%KEY\"",
            tmp.path().join(".env").display()
        )),
        "{err}"
    );
    assert!(!format!("{out:?}").contains(SECRET), "{out:?}");
}

/// Files found like compose (compose.yaml, then compose.toml), `.env` and
/// `--env-file`, `--profile`, `--services`, the TOML spelling of `!reset`.
#[test]
fn discovery_env_files_profiles_services_and_toml() {
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join("a/b");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(
        tmp.path().join("compose.toml"),
        "[services.web]\nimage = \"nginx:${TAG}\"\nports = [\"80:80\"]\n\n\
         [services.debug]\nimage = \"busybox\"\nprofiles = [\"dev\"]\n",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("compose.override.toml"),
        "[services.web]\nports = { \"!reset\" = [] }\n",
    )
    .unwrap();
    std::fs::write(tmp.path().join(".env"), "TAG=from-dotenv\n").unwrap();
    std::fs::write(tmp.path().join("prod.env"), "TAG=from-prod\n").unwrap();
    let env = BTreeMap::new();
    let json = json_of(&perry(
        &sub,
        &env,
        &["compose", "config", "--format", "json"],
    ))
    .unwrap();
    assert_eq!(json["services"]["web"]["image"], "nginx:from-dotenv");
    assert!(json["services"]["web"].get("ports").is_none(), "{json}");
    assert!(json["services"].get("debug").is_none());
    let name = tmp
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_lowercase();
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    assert_eq!(json["name"], name.trim_start_matches(['_', '-']));
    let out = perry(
        &sub,
        &env,
        &[
            "compose",
            "--env-file",
            tmp.path().join("prod.env").to_str().unwrap(),
            "--profile",
            "dev",
            "config",
            "--services",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "debug\nweb\n");
    let shell: BTreeMap<String, String> = [("TAG".to_string(), "from-shell".to_string())].into();
    let json = json_of(&perry(
        &sub,
        &shell,
        &["compose", "-p", "demo", "config", "--format", "json"],
    ))
    .unwrap();
    assert_eq!(json["name"], "demo");
    assert_eq!(json["services"]["web"]["image"], "nginx:from-shell");
}
