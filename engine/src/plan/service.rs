//! The policy half of planning a service (a compose service today, a workload node next): its
//! tier, and every field that would loosen that tier, refused with the service and field named.
//!
//! A service's tier is `[sandbox] default_tier` tightened — never loosened — by its
//! `x-perry-tier`. Then nothing in the service may undo what the tier takes away: no
//! `privileged`, no capability beyond the tier's set, no host namespaces, no writable root
//! where the tier makes it read-only, no `security_opt` that turns confinement off, no devices
//! above `default`, and no `build:` at all (only verified images run). Every refusal is found,
//! not only the first, so one `compose verify` shows everything to fix.

use std::fmt;

use perry_policies::{Code, Tier};

/// What a service asks for, in the terms the policy judges (filled from a compose service by
/// the compose adapter; a workload node fills the same).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceAsk {
    /// The service name.
    pub name: String,
    /// `image`, as written.
    pub image: Option<String>,
    /// The service has a `build:` section.
    pub build: bool,
    /// `x-perry-tier`.
    pub tier: Option<Tier>,
    /// `privileged: true`.
    pub privileged: bool,
    /// `cap_add`, as written (`NET_ADMIN` or `CAP_NET_ADMIN`, `ALL`).
    pub cap_add: Vec<String>,
    /// `network_mode`.
    pub network_mode: Option<String>,
    /// `pid`.
    pub pid: Option<String>,
    /// `ipc`.
    pub ipc: Option<String>,
    /// `uts`.
    pub uts: Option<String>,
    /// `userns_mode`.
    pub userns_mode: Option<String>,
    /// `read_only`, when written.
    pub read_only: Option<bool>,
    /// `security_opt`, as written.
    pub security_opt: Vec<String>,
    /// `devices`, as written.
    pub devices: Vec<String>,
}

/// One field of one service that the policy refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The service.
    pub service: String,
    /// The field path inside the service (`cap_add[1]`, `security_opt[0]`, `x-perry-tier`).
    pub field: String,
    /// Why, in words, with what to do instead.
    pub reason: String,
}

impl Refusal {
    /// Refusals are policy denials.
    pub fn code(&self) -> Code {
        Code::PolicyDenied
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "services.{}.{}: {}",
            self.service, self.field, self.reason
        )
    }
}

/// The capabilities the `default` tier keeps (docker's and podman's default set): the only
/// ones a `cap_add` may name, and only under `default`.
const DEFAULT_TIER_CAPS: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The service's tier: `base` (its image's trust-rule tier, else `[sandbox] default_tier`)
/// tightened by `x-perry-tier`, or the refusal of an `x-perry-tier` that would loosen it.
pub fn service_tier(ask: &ServiceAsk, base: Tier) -> Result<Tier, Refusal> {
    match ask.tier {
        None => Ok(base),
        Some(t) if t.at_least(base) => Ok(t),
        Some(t) => Err(Refusal {
            service: ask.name.clone(),
            field: "x-perry-tier".into(),
            reason: format!(
                "`{t}` is looser than `{base}`, the tier its image's trust rule (or [sandbox] default_tier) sets; a service may only tighten its tier"
            ),
        }),
    }
}

/// The tier an image starts from: the strictest `tier` of the trust rules matching it (a rule
/// without one counts as `default_tier`), else `default_tier`.
pub fn image_tier(config: &perry_policies::Config, image: &str) -> Tier {
    let default_tier = config.sandbox.default_tier;
    let Ok(image) = perry_policies::ImageRef::parse(image) else {
        return default_tier; // refused when it is verified
    };
    let rules = config.trust.rules_for(&image);
    if !rules.iter().any(|r| r.tier.is_some()) {
        return default_tier;
    }
    rules
        .iter()
        .map(|r| r.tier.unwrap_or(default_tier))
        .max()
        .unwrap_or(default_tier)
}

/// Every refusal for `ask` running at `tier`; empty when the service may run.
pub fn check_service(ask: &ServiceAsk, tier: Tier) -> Vec<Refusal> {
    let mut out = Vec::new();
    let mut refuse = |field: String, reason: String| {
        out.push(Refusal {
            service: ask.name.clone(),
            field,
            reason,
        })
    };
    if ask.build {
        refuse(
            "build".into(),
            "only verified images run: build and sign the image in CI, push it, and name it in `image`".into(),
        );
    }
    if ask.image.is_none() && !ask.build {
        refuse("image".into(), "no image given".into());
    }
    if ask.privileged {
        refuse(
            "privileged".into(),
            format!("`privileged: true` removes every confinement of tier `{tier}`"),
        );
    }
    for (i, cap) in ask.cap_add.iter().enumerate() {
        let name = cap.trim().to_ascii_uppercase();
        let name = name.strip_prefix("CAP_").unwrap_or(&name);
        let allowed = tier == Tier::Default && DEFAULT_TIER_CAPS.contains(&name);
        if !allowed {
            let why = if tier == Tier::Default {
                format!("`{cap}` is beyond the `default` tier's capability set")
            } else {
                format!("tier `{tier}` drops every capability; `{cap}` cannot be added")
            };
            refuse(format!("cap_add[{i}]"), why);
        }
    }
    if let Some(mode) = &ask.network_mode {
        let m = mode.as_str();
        let ok = m == "none"
            || m == "bridge"
            || (tier == Tier::Default
                && (m.starts_with("service:") || m.starts_with("container:")));
        if !ok {
            refuse(
                "network_mode".into(),
                format!("`{m}` is not allowed under tier `{tier}` (use project networks; `none` is always allowed)"),
            );
        }
    }
    for (field, value) in [
        ("pid", &ask.pid),
        ("ipc", &ask.ipc),
        ("uts", &ask.uts),
        ("userns_mode", &ask.userns_mode),
    ] {
        if let Some(v) = value {
            let shares = v == "host" || v.starts_with("container:") || v.starts_with("service:");
            if shares && !(tier == Tier::Default && v != "host") {
                refuse(
                    field.into(),
                    format!("`{v}` shares a namespace the tier `{tier}` keeps private"),
                );
            }
        }
    }
    if tier.at_least(Tier::Hardened) && ask.read_only == Some(false) {
        refuse(
            "read_only".into(),
            format!("tier `{tier}` runs with a read-only root; use a named volume or tmpfs for what must be written"),
        );
    }
    for (i, opt) in ask.security_opt.iter().enumerate() {
        let o = opt.replace(':', "=").to_ascii_lowercase();
        let disables = o.starts_with("seccomp=unconfined")
            || o.starts_with("apparmor=unconfined")
            || o == "label=disable"
            || o.starts_with("systempaths=unconfined")
            || o.starts_with("seccomp=")
            || (tier.at_least(Tier::Isolated) && o == "no-new-privileges=false");
        if disables {
            refuse(
                format!("security_opt[{i}]"),
                format!("`{opt}` would replace or turn off the confinement of tier `{tier}` (perry-sandbox applies the tier's own seccomp profile)"),
            );
        }
    }
    if tier.at_least(Tier::Isolated) {
        for (i, d) in ask.devices.iter().enumerate() {
            refuse(
                format!("devices[{i}]"),
                format!("device `{d}` is not available under tier `{tier}` (only `default` may pass devices)"),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(name: &str) -> ServiceAsk {
        ServiceAsk {
            name: name.into(),
            image: Some("registry.local/app:1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_service_passes_every_tier() {
        for t in [
            Tier::Default,
            Tier::Isolated,
            Tier::Hardened,
            Tier::Untrusted,
        ] {
            assert_eq!(check_service(&ask("web"), t), vec![], "{t}");
        }
    }

    fn config(rules: &str) -> perry_policies::Config {
        let text = format!(
            "[sandbox]\ndefault_tier = \"hardened\"\n[trust]\ntrusted_root = \"public-good\"\n{rules}"
        );
        perry_policies::Config::from_bytes(text.as_bytes(), "test.toml".as_ref()).unwrap()
    }

    #[test]
    fn an_image_starts_from_its_strictest_matching_rule_tier_else_the_default() {
        let id = "keyless = [{ issuer = \"https://i\", subject = \"s\" }]";
        let c = config(&format!(
            "[[trust.policy]]\nimages = [\"r.io/edge/**\"]\n{id}\ntier = \"default\"\n\
             [[trust.policy]]\nimages = [\"r.io/**\"]\n{id}\n\
             [[trust.policy]]\nimages = [\"q.io/**\"]\n{id}\ntier = \"isolated\"\n\
             [[trust.policy]]\nimages = [\"q.io/lab/**\"]\n{id}\ntier = \"untrusted\"\n"
        ));
        // r.io/edge matches a `default` rule and a rule without a tier (= hardened): hardened.
        assert_eq!(image_tier(&c, "r.io/edge/proxy:1"), Tier::Hardened);
        assert_eq!(image_tier(&c, "q.io/app:1"), Tier::Isolated);
        assert_eq!(image_tier(&c, "q.io/lab/x:1"), Tier::Untrusted);
        assert_eq!(image_tier(&c, "z.io/none:1"), Tier::Hardened);
        let only_edge = config(&format!(
            "[[trust.policy]]\nimages = [\"r.io/edge/**\"]\n{id}\ntier = \"default\"\n"
        ));
        assert_eq!(image_tier(&only_edge, "r.io/edge/proxy:1"), Tier::Default);
    }

    #[test]
    fn x_perry_tier_only_tightens() {
        let mut a = ask("db");
        assert_eq!(service_tier(&a, Tier::Hardened), Ok(Tier::Hardened));
        a.tier = Some(Tier::Untrusted);
        assert_eq!(service_tier(&a, Tier::Hardened), Ok(Tier::Untrusted));
        a.tier = Some(Tier::Default);
        let e = service_tier(&a, Tier::Hardened).unwrap_err();
        assert_eq!(e.field, "x-perry-tier");
        assert!(
            e.to_string()
                .starts_with("services.db.x-perry-tier: `default` is looser"),
            "{e}"
        );
        assert_eq!(e.code().status(), 403);
    }

    /// Each loosening field, alone, is refused and named — the attack list of the issue.
    #[test]
    fn every_loosening_field_is_refused_with_its_path() {
        type Attack = (fn(&mut ServiceAsk), Tier, &'static str);
        let attacks: Vec<Attack> = vec![
            (|a| a.build = true, Tier::Default, "build"),
            (|a| a.privileged = true, Tier::Default, "privileged"),
            (
                |a| a.cap_add = vec!["SYS_ADMIN".into()],
                Tier::Default,
                "cap_add[0]",
            ),
            (
                |a| a.cap_add = vec!["CHOWN".into(), "cap_net_raw".into()],
                Tier::Isolated,
                "cap_add[0]",
            ),
            (
                |a| a.network_mode = Some("host".into()),
                Tier::Default,
                "network_mode",
            ),
            (
                |a| a.network_mode = Some("service:db".into()),
                Tier::Hardened,
                "network_mode",
            ),
            (|a| a.pid = Some("host".into()), Tier::Default, "pid"),
            (|a| a.ipc = Some("host".into()), Tier::Isolated, "ipc"),
            (
                |a| a.userns_mode = Some("host".into()),
                Tier::Default,
                "userns_mode",
            ),
            (|a| a.read_only = Some(false), Tier::Hardened, "read_only"),
            (|a| a.read_only = Some(false), Tier::Untrusted, "read_only"),
            (
                |a| a.security_opt = vec!["seccomp=unconfined".into()],
                Tier::Default,
                "security_opt[0]",
            ),
            (
                |a| a.security_opt = vec!["label:disable".into()],
                Tier::Hardened,
                "security_opt[0]",
            ),
            (
                |a| a.security_opt = vec!["apparmor=unconfined".into()],
                Tier::Isolated,
                "security_opt[0]",
            ),
            (
                |a| a.security_opt = vec!["seccomp=/tmp/mine.json".into()],
                Tier::Default,
                "security_opt[0]",
            ),
            (
                |a| a.security_opt = vec!["no-new-privileges:false".into()],
                Tier::Isolated,
                "security_opt[0]",
            ),
            (
                |a| a.devices = vec!["/dev/kvm".into()],
                Tier::Isolated,
                "devices[0]",
            ),
        ];
        for (attack, tier, field) in attacks {
            let mut a = ask("svc");
            attack(&mut a);
            let refusals = check_service(&a, tier);
            assert!(
                refusals
                    .iter()
                    .any(|r| r.field == field && r.service == "svc"),
                "{field} at {tier}: {refusals:?}"
            );
        }
    }

    #[test]
    fn what_the_default_tier_keeps_it_may_ask_for() {
        let mut a = ask("web");
        a.cap_add = vec!["NET_BIND_SERVICE".into(), "CAP_CHOWN".into()];
        a.read_only = Some(false);
        a.devices = vec!["/dev/fuse".into()];
        a.network_mode = Some("service:db".into());
        assert_eq!(check_service(&a, Tier::Default), vec![]);
        // The same service one tier up is refused on every one of those fields.
        let fields: Vec<String> = check_service(&a, Tier::Isolated)
            .into_iter()
            .map(|r| r.field)
            .collect();
        assert_eq!(
            fields,
            ["cap_add[0]", "cap_add[1]", "network_mode", "devices[0]"]
        );
    }

    #[test]
    fn all_refusals_are_reported_at_once() {
        let mut a = ask("evil");
        a.build = true;
        a.privileged = true;
        a.pid = Some("host".into());
        let r = check_service(&a, Tier::Hardened);
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(
            r[0].reason.contains("build and sign the image in CI"),
            "{}",
            r[0]
        );
    }
}
