//! Printing a [`Project`] the way `docker compose config` prints it.
//!
//! YAML (the default format) keeps every `x-*` extension where it was written.
//! JSON follows compose-go's `Project.MarshalJSON`: `name` and `services` always,
//! `networks`, `volumes`, `secrets`, `configs` (and `models`) when not empty, the
//! top-level `x-*` keys, and no extensions below the top level (compose-go's types
//! tag them `json:"-"`), so `--format json` is what compose-go's tests and tools
//! expect.

use std::cell::Cell;

use crate::model::{Ipam, Project};

thread_local! {
    /// Set while [`to_yaml`] serialises: the fields compose-go's Go types print in
    /// JSON but omit in YAML (`omitempty` on the YAML tag only) consult it.
    static PRINTING_YAML: Cell<bool> = const { Cell::new(false) };
}

/// Resets [`PRINTING_YAML`] however serialisation ends.
struct YamlMode;

impl YamlMode {
    fn on() -> YamlMode {
        PRINTING_YAML.with(|y| y.set(true));
        YamlMode
    }
}

impl Drop for YamlMode {
    fn drop(&mut self) {
        PRINTING_YAML.with(|y| y.set(false));
    }
}

/// `command` / `entrypoint` left unset: `null` in JSON, omitted in YAML (compose-go).
pub(crate) fn unset_in_yaml<T>(v: &Option<T>) -> bool {
    v.is_none() && PRINTING_YAML.with(Cell::get)
}

/// A network's empty `ipam`: `{}` in JSON, omitted in YAML (compose-go).
pub(crate) fn empty_ipam_in_yaml(i: &Ipam) -> bool {
    *i == Ipam::default() && PRINTING_YAML.with(Cell::get)
}

/// The project as YAML with compose-spec keys (`compose config`), as compose-go
/// prints it: unset `command`/`entrypoint` and empty `ipam` are left out.
pub fn to_yaml(project: &Project) -> Result<String, String> {
    let _mode = YamlMode::on();
    serde_saphyr::to_string(project).map_err(|e| format!("cannot print the model as YAML: {e}"))
}

/// The project as pretty-printed JSON, like `docker compose config --format json`.
pub fn to_json(project: &Project) -> Result<String, String> {
    let mut p = project.clone();
    for s in p.services.values_mut() {
        s.extensions.clear();
        if let Some(b) = &mut s.build {
            b.extensions.clear();
            b.secrets.iter_mut().for_each(|r| r.extensions.clear());
        }
        if let Some(d) = &mut s.deploy {
            d.extensions.clear();
        }
        s.configs.iter_mut().for_each(|r| r.extensions.clear());
        s.secrets.iter_mut().for_each(|r| r.extensions.clear());
        s.volumes.iter_mut().for_each(|v| v.extensions.clear());
        s.networks
            .values_mut()
            .flatten()
            .for_each(|n| n.extensions.clear());
    }
    p.networks.values_mut().for_each(|n| n.extensions.clear());
    p.volumes.values_mut().for_each(|v| v.extensions.clear());
    p.secrets.values_mut().for_each(|s| s.extensions.clear());
    p.configs.values_mut().for_each(|c| c.extensions.clear());
    let mut value =
        serde_json::to_value(&p).map_err(|e| format!("cannot print the model as JSON: {e}"))?;
    if let serde_json::Value::Object(m) = &mut value {
        m.entry("services")
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    }
    serde_json::to_string_pretty(&value).map_err(|e| format!("cannot print the model as JSON: {e}"))
}
