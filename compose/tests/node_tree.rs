//! The spanned tree from YAML and TOML: tags, spans, options, budgets, errors.

use perry_compose::{parse_toml, parse_yaml, Value};

#[test]
fn yaml_keeps_spans_and_tags() {
    let src = "services:\n  web:\n    image: nginx\n    ports: !reset []\n    environment: !override\n      A: '1'\n";
    let n = parse_yaml("c.yaml", src).unwrap();
    let web = n.get("services").and_then(|s| s.get("web")).unwrap();
    let image = web.get("image").unwrap();
    assert_eq!(image.value, Value::String("nginx".into()));
    assert_eq!((image.span.line, image.span.column), (3, 12));
    assert_eq!(web.get("ports").unwrap().tag.as_deref(), Some("reset"));
    assert_eq!(
        web.get("environment").unwrap().tag.as_deref(),
        Some("override")
    );
}

#[test]
fn yaml_legacy_octal_and_merge_keys() {
    let src = "base: &b\n  mode: 0440\n  x: 1\nsvc:\n  <<: *b\n  x: 2\n";
    let n = parse_yaml("c.yaml", src).unwrap();
    let svc = n.get("svc").unwrap();
    assert_eq!(svc.get("mode").unwrap().value, Value::Int(288));
    assert_eq!(svc.get("x").unwrap().value, Value::Int(2));
}

#[test]
fn yaml_duplicate_keys_are_errors_with_location() {
    let e = parse_yaml("c.yaml", "a: 1\na: 2\n").unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("c.yaml:2:"), "{msg}");
    assert!(msg.to_lowercase().contains("duplicate"), "{msg}");
}

#[test]
fn yaml_alias_bomb_is_refused_quickly() {
    let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        src.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let t = std::time::Instant::now();
    let e = parse_yaml("bomb.yaml", &src).unwrap_err();
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert!(e.to_string().starts_with("bomb.yaml:"), "{e}");
}

#[test]
fn toml_and_yaml_spell_the_same_tree() {
    let yaml = "services:\n  web:\n    image: nginx\n    depends_on: [api]\n    ports: !reset []\n    environment: !override\n      A: '1'\nvolumes:\n  pgdata:\n    driver: local\n";
    let toml = "[services.web]\nimage = \"nginx\"\ndepends_on = [\"api\"]\nports = { \"!reset\" = [] }\nenvironment = { \"!override\" = { A = \"1\" } }\n[volumes]\npgdata = { driver = \"local\" }\n";
    let a = parse_yaml("c.yaml", yaml).unwrap();
    let b = parse_toml("c.toml", toml).unwrap();
    assert!(a.same_tree(&b), "{a:#?}\n{b:#?}");
    let img = b
        .get("services")
        .and_then(|s| s.get("web"))
        .and_then(|w| w.get("image"))
        .unwrap();
    assert_eq!((img.span.line, img.span.column), (2, 9));
}

#[test]
fn toml_errors_are_located() {
    let e = parse_toml("c.toml", "[services]\nweb = \n").unwrap_err();
    assert!(e.to_string().starts_with("c.toml:2:"), "{e}");
}
