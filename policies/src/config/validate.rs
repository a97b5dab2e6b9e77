//! Validation: what serde cannot check (tiers only tighten, capabilities stay hardened, plain
//! HTTP only on loopback, …), every problem with its key path.

use std::path::Path;

use super::model::{Config, Found, SHELLS};
use crate::capability::{ShellCapability, WORKSPACE_PLACEHOLDER};
use crate::error::{nearest, KeyPath};
use crate::reference::ImageRef;
use crate::registry::is_loopback_host;
use crate::tier::{NetworkPolicy, Tier};

impl Config {
    /// Checks what serde cannot: every rule that spans fields or compares with built-in tiers.
    /// Returns every problem found, each with its key path.
    pub fn validate(&self) -> Vec<Found> {
        let mut out: Vec<Found> = Vec::new();
        let mut err = |path: KeyPath, msg: String| out.push((path, msg, None));

        let sb = KeyPath::keys(&["sandbox"]);
        if self.sandbox.default_tier < Tier::Hardened {
            err(sb.key("default_tier"), format!(
                "`{}` is looser than `hardened`; capability runs are hardened unless configured stricter",
                self.sandbox.default_tier
            ));
        }
        let r = self.sandbox.uid_range;
        if r.start == 0 {
            err(sb.key("uid_range").key("start"), "0 maps sandboxes to host root, which disables RLIMIT_NPROC and much else; use an unprivileged range such as 200000".into());
        } else if r.count == 0 || r.start.checked_add(r.count).is_none() {
            err(
                sb.key("uid_range").key("count"),
                format!(
                    "range {}+{} is empty or past the largest uid",
                    r.start, r.count
                ),
            );
        }
        for (i, root) in self.sandbox.workspace_roots.iter().enumerate() {
            if !root.is_absolute() || root == Path::new("/") {
                err(
                    sb.key("workspace_roots").index(i),
                    format!(
                        "`{}` must be an absolute directory other than `/`",
                        root.display()
                    ),
                );
            }
        }

        let tp = KeyPath::keys(&["trust", "policy"]);
        for (i, rule) in self.trust.rules.iter().enumerate() {
            let p = tp.index(i);
            if rule.images.is_empty() {
                err(
                    p.key("images"),
                    "a trust policy must name at least one image glob".into(),
                );
            }
            if rule.keyless.is_empty() && rule.keys.is_empty() {
                err(p.clone(), "a trust policy needs at least one authority (`keyless` or `keys`); to deny images, leave them unmatched".into());
            }
            for (j, a) in rule.keyless.iter().enumerate() {
                let ap = p.key("keyless").index(j);
                if !(a.issuer.starts_with("https://") || a.issuer.starts_with("http://")) {
                    err(ap.key("issuer"), format!("`{}` is not an issuer URL (e.g. `https://token.actions.githubusercontent.com`)", a.issuer));
                }
                match (&a.subject, &a.subject_regex) {
                    (Some(_), Some(_)) => err(
                        ap.clone(),
                        "give `subject` or `subject_regex`, not both".into(),
                    ),
                    (None, None) => err(
                        ap.clone(),
                        "an identity needs `subject` (exact) or `subject_regex` (anchored regex)"
                            .into(),
                    ),
                    (None, Some(re))
                        if !(re.as_str().starts_with('^') && re.as_str().ends_with('$')) =>
                    {
                        err(
                            ap.key("subject_regex"),
                            format!(
                                "`{re}` must be anchored: write `^{}$`",
                                re.as_str().trim_start_matches('^').trim_end_matches('$')
                            ),
                        )
                    }
                    _ => {}
                }
            }
        }

        for (host, reg) in &self.registries {
            let p = KeyPath::keys(&["registries", host]);
            if ImageRef::parse(&format!("{host}/x"))
                .map(|r| r.registry() != host)
                .unwrap_or(true)
                || !host.contains(['.', ':']) && host != "localhost"
            {
                err(
                    p.clone(),
                    format!("`{host}` is not a registry host (expected `host` or `host:port`)"),
                );
            }
            if reg.insecure && !is_loopback_host(host) {
                err(p.key("insecure"), format!("plain HTTP is only allowed for loopback registries; `{host}` is not loopback"));
            }
            let methods = [
                reg.docker_config.is_some(),
                reg.username.is_some() || reg.password.is_some(),
                reg.token.is_some(),
            ];
            if methods.iter().filter(|m| **m).count() > 1 {
                err(
                    p.clone(),
                    "choose one of `docker_config`, `username`+`password` or `token`".into(),
                );
            }
            if reg.username.is_some() != reg.password.is_some() {
                err(p.clone(), "`username` and `password` go together".into());
            }
        }

        for (tier, ov) in &self.tiers {
            if let Err((field, why)) = ov.check_tightens(*tier) {
                err(KeyPath::keys(&["tiers", tier.name(), field]), why);
            }
        }

        for (name, cap) in &self.capabilities {
            self.validate_capability(name, cap, &mut err);
        }
        for name in self.capability_images.keys() {
            if !self.capabilities.contains_key(name) {
                let s = nearest(name, self.capabilities.keys().map(String::as_str));
                out.push((
                    KeyPath::keys(&["shellCapabilityImages", name]),
                    format!("no capability named `{name}` in [shellCapabilities]"),
                    s,
                ));
            }
        }

        let sv = KeyPath::keys(&["service"]);
        if self.service.max_concurrent == 0 {
            out.push((sv.key("max_concurrent"), "must be at least 1".into(), None));
        }
        if self.service.pool > super::model::MAX_POOL {
            out.push((
                sv.key("pool"),
                format!("at most {} sandboxes per shape", super::model::MAX_POOL),
                None,
            ));
        }
        if self.service.max_request_size.as_u64() < 1024 {
            out.push((
                sv.key("max_request_size"),
                "must be at least 1KiB".into(),
                None,
            ));
        }
        let au = KeyPath::keys(&["audit"]);
        if self.audit.checkpoint_every == 0 {
            out.push((
                au.key("checkpoint_every"),
                "must be at least 1".into(),
                None,
            ));
        }
        if self.audit.origin.is_empty()
            || self.audit.origin.contains(char::is_whitespace)
            || self.audit.origin.contains("://")
        {
            out.push((
                au.key("origin"),
                format!(
                    "`{}` must be a schema-less URL without spaces, e.g. `perry.example.com/audit`",
                    self.audit.origin
                ),
                None,
            ));
        }
        self.backends.validate(&mut out);
        out
    }

    fn validate_capability(
        &self,
        name: &str,
        cap: &ShellCapability,
        err: &mut impl FnMut(KeyPath, String),
    ) {
        let p = KeyPath::keys(&["shellCapabilities", name]);
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
            && name.as_bytes()[0].is_ascii_alphanumeric();
        if !name_ok {
            err(
                p.clone(),
                "capability names are 1-64 of [a-z0-9._-], starting with a letter or digit".into(),
            );
        }
        match cap.command.first() {
            None => err(
                p.key("command"),
                "must name a program to run, e.g. [\"git\", \"log\"]".into(),
            ),
            Some(prog) => {
                let base = prog.rsplit('/').next().unwrap_or(prog);
                if SHELLS.contains(&base) && cap.command.get(1).is_some_and(|a| a == "-c") {
                    err(p.key("command"), format!("`{base} -c` reintroduces a shell; capabilities run argv directly, list the program and its arguments instead"));
                }
                if prog.is_empty() {
                    err(
                        p.key("command").index(0),
                        "the program name is empty".into(),
                    );
                }
            }
        }
        if cap.tier < Tier::Hardened {
            err(
                p.key("tier"),
                format!(
                    "`{}` is looser than `hardened`; capabilities run at tier hardened or stricter",
                    cap.tier
                ),
            );
        }
        let spec = cap.tier.effective_spec(self.tiers.get(&cap.tier));
        if cap.network
            && !matches!(
                spec.network,
                NetworkPolicy::Allowed | NetworkPolicy::NoneUnlessGranted
            )
        {
            err(
                p.key("network"),
                format!("tier `{}` never allows network", cap.tier),
            );
        }
        let l = spec.limits;
        let over = |field: &str, got: String, max: String| {
            format!(
                "`{got}` exceeds tier `{}`'s {field} limit of {max}",
                cap.tier
            )
        };
        if let Some(t) = cap.timeout {
            if t > l.timeout {
                err(
                    p.key("timeout"),
                    over("timeout", t.to_string(), l.timeout.to_string()),
                );
            }
        }
        if let Some(m) = cap.memory {
            if m > l.memory {
                err(
                    p.key("memory"),
                    over("memory", m.to_string(), l.memory.to_string()),
                );
            }
        }
        if let Some(n) = cap.pids {
            if n == 0 || n > l.pids {
                err(
                    p.key("pids"),
                    over("pids", n.to_string(), l.pids.to_string()),
                );
            }
        }
        if let Some(o) = cap.output_limit {
            if o > l.output {
                err(
                    p.key("output_limit"),
                    over("output", o.to_string(), l.output.to_string()),
                );
            }
        }
        for (i, pos) in cap.args.positions.iter().enumerate() {
            let pp = p.key("args").key("positions").index(i);
            if pos.pattern.is_some() != pos.one_of.is_empty() {
                err(
                    pp.clone(),
                    "give exactly one of `pattern` or `one_of`".into(),
                );
            }
            if i >= cap.args.max {
                err(
                    pp,
                    format!(
                        "position {i} can never be used: args.max is {}",
                        cap.args.max
                    ),
                );
            }
        }
        for (i, m) in cap.mounts.iter().enumerate() {
            let mp = p.key("mounts").index(i);
            let src_ok = m.source == WORKSPACE_PLACEHOLDER
                || m.source
                    .strip_prefix(WORKSPACE_PLACEHOLDER)
                    .is_some_and(|r| r.starts_with('/') && !r.split('/').any(|c| c == ".."))
                || (m.source.starts_with('/')
                    && !m.source.contains(WORKSPACE_PLACEHOLDER)
                    && !m.source.split('/').any(|c| c == ".."));
            if !src_ok {
                err(
                    mp.key("source"),
                    format!(
                        "`{}` must be an absolute path or `{{workspace}}[/sub/dir]`, without `..`",
                        m.source
                    ),
                );
            }
            let t = &m.target;
            let bad_target = !t.starts_with('/')
                || t == "/"
                || t.split('/').any(|c| c == "..")
                || ["/proc", "/sys", "/dev"]
                    .iter()
                    .any(|s| t == s || t.starts_with(&format!("{s}/")));
            if bad_target {
                err(mp.key("target"), format!("`{t}` must be an absolute path inside the sandbox, not `/`, /proc, /sys or /dev"));
            }
        }
        let var_ok = |v: &str| {
            !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !v.as_bytes()[0].is_ascii_digit()
        };
        for (i, v) in cap.env.pass.iter().enumerate() {
            if !var_ok(v) {
                err(
                    p.key("env").key("pass").index(i),
                    format!("`{v}` is not a variable name"),
                );
            } else if v.starts_with("LD_") {
                err(p.key("env").key("pass").index(i), format!("`{v}` changes how programs are loaded and may not be passed from a request"));
            }
        }
        for k in cap.env.set.keys() {
            if !var_ok(k) {
                err(
                    p.key("env").key("set").key(k),
                    format!("`{k}` is not a variable name"),
                );
            }
        }
        if let Some(w) = &cap.workdir {
            if !w.starts_with('/') {
                err(p.key("workdir"), format!("`{w}` must be an absolute path"));
            }
        }
    }
}
