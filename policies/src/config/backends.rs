//! `[backends]`: which container backend compose services run on, and each backend's
//! per-host settings (`[backends.podman] runtime = "runc"`, extra flags), so that host quirks
//! are configuration rather than constants in the driver.
//!
//! The environment (`PERRY_CONTAINER_BACKEND`, `PERRY_CONTAINER_MODE`) still wins over
//! `backend` and `mode` here. Extra flags can only be ones that cannot loosen a tier (see
//! [`EXTRA_ARG_FLAGS`]); `--ulimit` values are merged with the tier's by taking the lower.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::model::Found;
use crate::error::{nearest, KeyPath};

/// Every backend name, in the macOS probe order (Linux and Windows probe podman, nerdctl,
/// docker).
pub const BACKEND_NAMES: [&str; 8] = [
    "apple-container",
    "orbstack",
    "colima",
    "rancher-desktop",
    "lima",
    "podman",
    "nerdctl",
    "docker",
];

/// The flags `extra_args` may hold (each followed by its value, or as `--flag=value`): host
/// plumbing only. Anything that could loosen a tier's confinement (`--privileged`,
/// `--cap-add`, `--security-opt`, `--network`, `--user`, `--volume`, `--device`, `--pid`, …)
/// is refused.
pub const EXTRA_ARG_FLAGS: [&str; 4] = ["--ulimit", "--log-driver", "--log-opt", "--cgroup-parent"];

/// `local-first` or `server-first` (`PERRY_CONTAINER_MODE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendMode {
    /// Local backends first.
    #[default]
    LocalFirst,
    /// A remote daemon first (`DOCKER_HOST`, `CONTAINER_HOST`, a podman remote connection).
    ServerFirst,
}

/// `[backends]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendsConfig {
    /// Use this backend, no probing (like `PERRY_CONTAINER_BACKEND`, which wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Detection mode (like `PERRY_CONTAINER_MODE`, which wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<BackendMode>,
    /// The probe order to use instead of the platform's; backends not listed are not probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<String>>,
    /// `[backends.podman]`.
    #[serde(default, skip_serializing_if = "BackendSettings::is_empty")]
    pub podman: BackendSettings,
    /// `[backends.docker]`.
    #[serde(default, skip_serializing_if = "BackendSettings::is_empty")]
    pub docker: BackendSettings,
    /// `[backends.nerdctl]`.
    #[serde(default, skip_serializing_if = "BackendSettings::is_empty")]
    pub nerdctl: BackendSettings,
    /// `[backends.orbstack]`.
    #[serde(default, skip_serializing_if = "BackendSettings::is_empty")]
    pub orbstack: BackendSettings,
    /// `[backends.colima]`.
    #[serde(default, skip_serializing_if = "BackendSettings::is_empty")]
    pub colima: BackendSettings,
    /// `[backends.rancher-desktop]`.
    #[serde(
        default,
        rename = "rancher-desktop",
        skip_serializing_if = "BackendSettings::is_empty"
    )]
    pub rancher_desktop: BackendSettings,
    /// `[backends.lima]`.
    #[serde(default, skip_serializing_if = "BackendSettings::is_empty")]
    pub lima: BackendSettings,
    /// `[backends.apple-container]`.
    #[serde(
        default,
        rename = "apple-container",
        skip_serializing_if = "BackendSettings::is_empty"
    )]
    pub apple_container: BackendSettings,
}

/// `[backends.<name>]`: one backend's per-host settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSettings {
    /// The CLI to run (default: the backend's usual name on `PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<PathBuf>,
    /// The OCI runtime (`runc`, `crun`; podman `--runtime`, docker/nerdctl `run --runtime`).
    /// Unset: podman uses `runc` when it is on `PATH`, else its own default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Flags added to every container create (only [`EXTRA_ARG_FLAGS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// The command that installs this backend, as argv (default: the platform's package
    /// manager or brew), offered when no backend is found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub install: Vec<String>,
    /// podman only: the sandboxed-kernel runtime for `untrusted` (default `/usr/bin/runsc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_runtime: Option<PathBuf>,
    /// lima only: the instance to run nerdctl in (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl BackendSettings {
    /// Nothing set.
    pub fn is_empty(&self) -> bool {
        *self == BackendSettings::default()
    }
}

impl BackendsConfig {
    /// Nothing configured.
    pub fn is_default(&self) -> bool {
        *self == BackendsConfig::default()
    }

    /// The settings for backend `name` (defaults for an unknown name).
    pub fn settings(&self, name: &str) -> BackendSettings {
        match name {
            "podman" => self.podman.clone(),
            "docker" => self.docker.clone(),
            "nerdctl" => self.nerdctl.clone(),
            "orbstack" => self.orbstack.clone(),
            "colima" => self.colima.clone(),
            "rancher-desktop" => self.rancher_desktop.clone(),
            "lima" => self.lima.clone(),
            "apple-container" => self.apple_container.clone(),
            _ => BackendSettings::default(),
        }
    }

    /// Problems serde cannot see, each with its key path (called by `Config::validate`).
    pub(super) fn validate(&self, out: &mut Vec<Found>) {
        let p = KeyPath::keys(&["backends"]);
        let known = |path: KeyPath, name: &str, out: &mut Vec<Found>| {
            if !BACKEND_NAMES.contains(&name) {
                out.push((
                    path,
                    format!(
                        "unknown backend `{name}` (valid: {})",
                        BACKEND_NAMES.join(", ")
                    ),
                    nearest(name, BACKEND_NAMES),
                ));
            }
        };
        if let Some(b) = &self.backend {
            known(p.key("backend"), b, out);
        }
        if let Some(order) = &self.order {
            if order.is_empty() {
                out.push((
                    p.key("order"),
                    "an empty order probes nothing; remove it to use the platform's".into(),
                    None,
                ));
            }
            for (i, n) in order.iter().enumerate() {
                known(p.key("order").index(i), n, out);
                if order[..i].contains(n) {
                    out.push((
                        p.key("order").index(i),
                        format!("`{n}` is listed twice"),
                        None,
                    ));
                }
            }
        }
        for name in BACKEND_NAMES {
            let s = self.settings(name);
            let sp = p.key(name);
            if s.program.as_ref().is_some_and(|x| x.as_os_str().is_empty()) {
                out.push((sp.key("program"), "the program is empty".into(), None));
            }
            if s.runtime
                .as_ref()
                .is_some_and(|r| r.is_empty() || r.starts_with('-'))
            {
                out.push((
                    sp.key("runtime"),
                    "must name an OCI runtime (`runc`, `crun`) or its path".into(),
                    None,
                ));
            }
            if s.sandbox_runtime.is_some() && name != "podman" {
                out.push((
                    sp.key("sandbox_runtime"),
                    "only podman runs the sandboxed-kernel runtime (gVisor) here".into(),
                    None,
                ));
            }
            if let Some(r) = &s.sandbox_runtime {
                if !r.is_absolute() {
                    out.push((
                        sp.key("sandbox_runtime"),
                        format!("`{}` must be an absolute path", r.display()),
                        None,
                    ));
                }
            }
            if s.instance.is_some() && name != "lima" {
                out.push((sp.key("instance"), "only lima has instances".into(), None));
            }
            check_extra_args(&s.extra_args, &sp.key("extra_args"), out);
            if s.install.first().is_some_and(|p| p.is_empty()) {
                out.push((
                    sp.key("install"),
                    "the install command is empty".into(),
                    None,
                ));
            }
        }
    }
}

fn check_extra_args(args: &[String], path: &KeyPath, out: &mut Vec<Found>) {
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let (flag, inline) = match a.split_once('=') {
            Some((f, _)) if f.starts_with("--") => (f, true),
            _ => (a.as_str(), false),
        };
        if !EXTRA_ARG_FLAGS.contains(&flag) {
            out.push((
                path.index(i),
                format!(
                    "`{a}` is not allowed: extra_args may only hold {} (nothing that could loosen a tier)",
                    EXTRA_ARG_FLAGS.join(", ")
                ),
                nearest(flag, EXTRA_ARG_FLAGS),
            ));
            i += 1;
            continue;
        }
        if inline {
            i += 1;
            continue;
        }
        match args.get(i + 1) {
            Some(v) if !v.starts_with('-') => i += 2,
            _ => {
                out.push((path.index(i), format!("`{a}` needs a value"), None));
                i += 1;
            }
        }
    }
}
