//! A `perryconfig.toml` for a test: trust the stack for the loopback registry's images.

use std::path::{Path, PathBuf};

use crate::registry::Registry;
use crate::sigstack::{SigStack, DEFAULT_IDENTITY, DEFAULT_ISSUER};

/// Builds a `perryconfig.toml`: `[sandbox] state_dir` inside the test's directory, `[trust]` with
/// the stack's `trusted_root.json` and one rule for `127.0.0.1:PORT/**`, and
/// `[registries."127.0.0.1:PORT"] insecure = true` (plain HTTP, allowed for loopback only).
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    registry_host: String,
    trusted_root: PathBuf,
    images: Vec<String>,
    keyless: Vec<(String, String)>,
    tag_ttl: Option<String>,
    tiered: Vec<(Vec<String>, String)>,
    extra: String,
}

fn toml_str(s: &str) -> String {
    // TOML basic strings and JSON strings escape alike for everything we write.
    serde_json::to_string(s).expect("json string")
}

impl ConfigBuilder {
    /// Trust `stack` for every image on `reg`, signed by the default identity and issuer.
    pub fn new(reg: &Registry, stack: &SigStack) -> Self {
        Self {
            registry_host: reg.host(),
            trusted_root: stack.trusted_root(),
            images: vec![format!("{}/**", reg.host())],
            keyless: vec![(DEFAULT_ISSUER.into(), DEFAULT_IDENTITY.into())],
            tag_ttl: None,
            tiered: Vec::new(),
            extra: String::new(),
        }
    }

    /// Replace the trusted root (e.g. another stack's: "untrusted root").
    pub fn trusted_root(mut self, path: &Path) -> Self {
        self.trusted_root = path.to_path_buf();
        self
    }

    /// Replace the rule's image globs.
    pub fn images(mut self, globs: &[&str]) -> Self {
        self.images = globs.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Replace the rule's keyless authorities with exactly this `(issuer, subject)`.
    pub fn identity(mut self, issuer: &str, subject: &str) -> Self {
        self.keyless = vec![(issuer.into(), subject.into())];
        self
    }

    /// Adds a rule for `globs`, signed like the main rule, whose images start at `tier`
    /// (compose services; `[[trust.policy]] tier = …`).
    pub fn tiered_rule(mut self, globs: &[&str], tier: &str) -> Self {
        self.tiered.push((
            globs.iter().map(|s| s.to_string()).collect(),
            tier.to_string(),
        ));
        self
    }

    /// Sets `[trust] tag_ttl` (e.g. `"1h"`).
    pub fn tag_ttl(mut self, ttl: &str) -> Self {
        self.tag_ttl = Some(ttl.to_string());
        self
    }

    /// `[backends.podman]` for the test hosts: podman as the compose backend, with the
    /// `--ulimit nproc` this host's podman needs (it cannot set `RLIMIT_NPROC` for a container
    /// otherwise) — host plumbing as configuration, the way a site would write it.
    pub fn host_podman(self) -> Self {
        self.extra("[backends]\nbackend = \"podman\"\n\n[backends.podman]\nextra_args = [\"--ulimit\", \"nproc=1024:1024\"]")
    }

    /// Append raw TOML (capabilities, tiers, …) after the generated sections.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// The TOML text.
    pub fn render(&self, state_dir: &Path) -> String {
        let images = self
            .images
            .iter()
            .map(|g| toml_str(g))
            .collect::<Vec<_>>()
            .join(", ");
        let keyless = self
            .keyless
            .iter()
            .map(|(i, s)| format!("{{ issuer = {}, subject = {} }}", toml_str(i), toml_str(s)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "# written by perry-testworld\n\
             [sandbox]\nstate_dir = {state}\n\n\
             [trust]\ntrusted_root = {root}\n{tag_ttl}\n\
             [[trust.policy]]\nname = \"testworld\"\nimages = [{images}]\nkeyless = [{keyless}]\n\n\
             {tiered}\
             [registries.{host}]\ninsecure = true\n\n{extra}",
            state = toml_str(&state_dir.display().to_string()),
            root = toml_str(&self.trusted_root.display().to_string()),
            tag_ttl = self
                .tag_ttl
                .as_deref()
                .map(|t| format!("tag_ttl = {}\n", toml_str(t)))
                .unwrap_or_default(),
            host = toml_str(&self.registry_host),
            tiered = self
                .tiered
                .iter()
                .enumerate()
                .map(|(i, (globs, tier))| {
                    let globs: Vec<String> = globs.iter().map(|g| toml_str(g)).collect();
                    format!(
                        "[[trust.policy]]\nname = \"tiered-{i}\"\nimages = [{}]\nkeyless = [{keyless}]\ntier = {}\n\n",
                        globs.join(", "),
                        toml_str(tier)
                    )
                })
                .collect::<String>(),
            extra = self.extra,
        )
    }

    /// Writes `<dir>/perryconfig.toml` (state under `<dir>/state`) and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let state = dir.join("state");
        std::fs::create_dir_all(&state).expect("state dir");
        let path = dir.join("perryconfig.toml");
        std::fs::write(&path, self.render(&state)).expect("write perryconfig.toml");
        path
    }
}
