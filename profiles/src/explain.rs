//! Profiles explained for people: `profiles show` and `profiles diff`.
//!
//! A reviewer who has never seen seccomp should be able to read what a tier lets a program do.
//! So system calls are grouped by purpose (systemd's groups: "@mount", "@network-io", ...), each
//! refusal says which error the program sees, and argument checks are spelled out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::seccomp::{Access, ArgRule, ENOSYS, EPERM};
use crate::{syscalls, Profile};

#[derive(Deserialize)]
struct Groups {
    order: Vec<String>,
    groups: BTreeMap<String, Group>,
}

#[derive(Deserialize)]
struct Group {
    help: String,
    syscalls: Vec<String>,
}

fn groups() -> &'static Groups {
    static G: OnceLock<Groups> = OnceLock::new();
    G.get_or_init(|| {
        serde_json::from_str(include_str!("../data/syscall-groups.json"))
            .expect("data/syscall-groups.json parses")
    })
}

/// One syscall group as seen by one profile.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GroupView {
    /// Group name, e.g. `@mount`.
    pub group: String,
    /// What the group is for.
    pub help: String,
    /// Calls allowed with any arguments.
    pub allowed: Vec<String>,
    /// Calls allowed for some arguments only.
    pub restricted: Vec<String>,
    /// Calls refused with EPERM.
    pub eperm: Vec<String>,
    /// Calls refused with ENOSYS.
    pub enosys: Vec<String>,
}

/// An argument-checked call: when it is allowed, and when it gets EPERM.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ArgCheckView {
    /// The syscall.
    pub syscall: String,
    /// Allowed when any of these holds (empty: allowed unless an EPERM condition holds).
    pub allowed_when: Vec<String>,
    /// Refused with EPERM when any of these holds.
    pub eperm_when: Vec<String>,
}

/// The machine-readable form of `profiles show`.
#[derive(Clone, Debug, Serialize)]
pub struct ShowView<'a> {
    /// The profile (capabilities, Landlock, limits, ...).
    pub profile: &'a Profile,
    /// Count of calls allowed with any arguments.
    pub allowed_count: usize,
    /// Calls allowed with any arguments.
    pub allowed: Vec<String>,
    /// Argument-checked calls.
    pub argument_checks: Vec<ArgCheckView>,
    /// Calls refused with EPERM.
    pub eperm: Vec<String>,
    /// Number of other known calls, refused with ENOSYS.
    pub enosys_count: usize,
    /// The same, by group.
    pub groups: Vec<GroupView>,
    /// Instruction counts of the two BPF programs.
    pub bpf_instructions: BpfSizes,
    /// Securebit names.
    pub securebits: Vec<&'static str>,
}

/// BPF program sizes.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct BpfSizes {
    /// The allowlist program, with its arch/x32 guard.
    pub allowlist: usize,
    /// The stacked EPERM program.
    pub eperm: usize,
}

fn describe_rules(rs: &[ArgRule]) -> Vec<String> {
    rs.iter().map(ArgRule::describe).collect()
}

/// Builds the view `profiles show` prints.
pub fn show_view(p: &Profile) -> ShowView<'_> {
    let r = p.seccomp.rules();
    let all: Vec<&str> = syscalls::all_names().collect();
    let mut allowed = Vec::new();
    let mut eperm = Vec::new();
    let mut enosys = 0;
    let mut checks = Vec::new();
    for n in &all {
        match (r.access(n), r.refusal(n)) {
            (Access::Allowed, _) => allowed.push(n.to_string()),
            (Access::Restricted, _) => checks.push(ArgCheckView {
                syscall: n.to_string(),
                allowed_when: describe_rules(r.allow.get(*n).map_or(&[][..], Vec::as_slice)),
                eperm_when: describe_rules(r.eperm.get(*n).map_or(&[][..], Vec::as_slice)),
            }),
            (Access::Denied, Some(EPERM)) => eperm.push(n.to_string()),
            _ => enosys += 1,
        }
    }
    let g = groups();
    let groups = g
        .order
        .iter()
        .filter(|name| !matches!(name.as_str(), "@known" | "@default" | "@system-service"))
        .filter_map(|name| {
            let grp = g.groups.get(name)?;
            let mut v = GroupView {
                group: name.clone(),
                help: grp.help.clone(),
                allowed: vec![],
                restricted: vec![],
                eperm: vec![],
                enosys: vec![],
            };
            for s in grp
                .syscalls
                .iter()
                .filter(|s| syscalls::number(s).is_some())
            {
                let bucket = match (r.access(s), r.refusal(s)) {
                    (Access::Allowed, _) => &mut v.allowed,
                    (Access::Restricted, _) => &mut v.restricted,
                    (Access::Denied, Some(EPERM)) => &mut v.eperm,
                    _ => &mut v.enosys,
                };
                bucket.push(s.clone());
            }
            Some(v)
        })
        .collect();
    ShowView {
        profile: p,
        allowed_count: allowed.len(),
        allowed,
        argument_checks: checks,
        eperm,
        enosys_count: enosys,
        groups,
        bpf_instructions: BpfSizes {
            allowlist: p.seccomp.allowlist.len(),
            eperm: p.seccomp.eperm.len(),
        },
        securebits: crate::caps::securebit_names(p.securebits),
    }
}

fn list(names: &[String]) -> String {
    names.join(", ")
}

fn network_text(p: &Profile) -> &'static str {
    match p.network {
        crate::NetworkMode::Host => "allowed (the network the runtime provides)",
        crate::NetworkMode::None => "none: only local AF_UNIX sockets can be created",
        crate::NetworkMode::Granted => "TCP to and from granted ports only",
    }
}

/// What an argument-checked call is for, for readers who do not know the call.
fn purpose(syscall: &str) -> &'static str {
    match syscall {
        "clone" => " (start a process or thread; CLONE_NEW* flags would create new namespaces)",
        "ioctl" => {
            " (device and terminal control; TIOCSTI/TIOCLINUX type into the user's terminal)"
        }
        "personality" => " (execution domain; changes can switch off address randomisation)",
        "socket" => " (open a network or local socket; the family picks which)",
        "socketpair" => " (a connected pair of sockets)",
        _ => "",
    }
}

/// `profiles show` as text.
pub fn show_text(p: &Profile) -> String {
    let v = show_view(p);
    let s = &p.spec;
    let l = &s.limits;
    let mut o = String::new();
    let yes = |b: bool| if b { "yes" } else { "no" };
    let _ = writeln!(o, "Tier `{}`", p.tier);
    let _ = writeln!(o);
    let _ = writeln!(o, "In short");
    let _ = writeln!(
        o,
        "  root filesystem   {}",
        if s.read_only_root {
            "read-only (writable: /tmp and granted paths)"
        } else {
            "as the image asks"
        }
    );
    let _ = writeln!(o, "  network           {}", network_text(p));
    let _ = writeln!(
        o,
        "  user              {}",
        if s.non_root {
            "must not be root"
        } else {
            "as the image asks"
        }
    );
    let _ = writeln!(
        o,
        "  privileges        {}",
        if p.caps.is_empty() {
            "none: every capability dropped, and they can never come back"
        } else {
            "docker's default capability set"
        }
    );
    let _ = writeln!(
        o,
        "  system calls      {} allowed, {} allowed with argument checks, {} refused with EPERM, {} more refused with ENOSYS",
        v.allowed_count,
        v.argument_checks.len(),
        v.eperm.len(),
        v.enosys_count
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "System calls");
    let _ = writeln!(
        o,
        "  A system call is a request a program makes to the kernel (open a file, start a thread,\n  \
         mount a filesystem). This tier lets through only the calls listed as allowed. Calls known\n  \
         to be dangerous fail with EPERM (\"operation not permitted\"); all others fail with ENOSYS\n  \
         (\"function not implemented\"), which programs treat as an old kernel and work around."
    );
    let _ = writeln!(o);
    for g in &v.groups {
        let total = g.allowed.len() + g.restricted.len() + g.eperm.len() + g.enosys.len();
        if total == 0 {
            continue;
        }
        let status = if g.allowed.len() == total {
            "all allowed".to_string()
        } else if g.allowed.is_empty() && g.restricted.is_empty() {
            "all refused".to_string()
        } else {
            format!(
                "{} of {} allowed",
                g.allowed.len() + g.restricted.len(),
                total
            )
        };
        let _ = writeln!(o, "  {:<16} {} — {}", g.group, g.help, status);
        if !g.restricted.is_empty() {
            let _ = writeln!(o, "      checked: {}", list(&g.restricted));
        }
        if !g.eperm.is_empty() {
            let _ = writeln!(o, "      refused (EPERM): {}", list(&g.eperm));
        }
        if !g.enosys.is_empty() && g.allowed.len() + g.restricted.len() > 0 {
            let _ = writeln!(o, "      refused (ENOSYS): {}", list(&g.enosys));
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "Argument checks");
    let _ = writeln!(
        o,
        "  Some calls are allowed or refused depending on their arguments:"
    );
    for c in &v.argument_checks {
        let _ = writeln!(o, "  {}{}", c.syscall, purpose(&c.syscall));
        if c.allowed_when.is_empty() {
            let _ = writeln!(o, "      allowed when: not refused below");
        } else {
            let _ = writeln!(o, "      allowed when: {}", c.allowed_when.join("; or "));
        }
        if !c.eperm_when.is_empty() {
            let _ = writeln!(o, "      EPERM when:   {}", c.eperm_when.join("; or "));
        }
    }
    let _ = writeln!(
        o,
        "  clone3\n      always ENOSYS (its flags cannot be checked; glibc falls back to clone)"
    );
    let _ = writeln!(
        o,
        "  other architectures and x32 calls: the process is killed"
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "Privileges");
    let names = |c: &[caps::Capability]| {
        if c.is_empty() {
            "none".to_string()
        } else {
            c.iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let _ = writeln!(o, "  capabilities      {}", names(&p.caps.bounding));
    let _ = writeln!(
        o,
        "  securebits        {}",
        if v.securebits.is_empty() {
            "none".to_string()
        } else {
            v.securebits.join(", ")
        }
    );
    let _ = writeln!(
        o,
        "  no_new_privs      {} (setuid programs cannot gain privileges)",
        yes(p.no_new_privs)
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "Landlock (kernel file and network access control)");
    match &p.landlock {
        None => {
            let _ = writeln!(o, "  not used in this tier");
        }
        Some(ll) => {
            let w: Vec<String> = ll.writable().map(|p| p.display().to_string()).collect();
            let _ = writeln!(
                o,
                "  files             read-only everywhere; writable: {}",
                w.join(", ")
            );
            let ports = |p: &[u16]| {
                if p.is_empty() {
                    "none".to_string()
                } else {
                    p.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
                }
            };
            let _ = writeln!(o, "  TCP connect to    {}", ports(&ll.tcp_connect));
            let _ = writeln!(o, "  TCP listen on     {}", ports(&ll.tcp_bind));
            let _ = writeln!(
                o,
                "  required          {}",
                if ll.required {
                    "yes: refuses to run unless the kernel enforces all of it"
                } else {
                    "no: used as far as the kernel supports it, and recorded"
                }
            );
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "Limits");
    let _ = writeln!(o, "  memory            {}", l.memory);
    let _ = writeln!(o, "  processes         {}", l.pids);
    let _ = writeln!(o, "  CPU               {} core(s)", l.cpus);
    let _ = writeln!(o, "  run time          {}", l.timeout);
    let _ = writeln!(o, "  /tmp size         {}", l.tmpfs);
    let _ = writeln!(o, "  open files        {}", l.nofile);
    let _ = writeln!(o, "  output kept       {} per stream", l.output);
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "BPF: allowlist {} instructions, EPERM filter {} instructions",
        v.bpf_instructions.allowlist, v.bpf_instructions.eperm
    );
    o
}

/// What tier `a` permits that tier `b` does not.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DiffView {
    /// The looser side.
    pub a: String,
    /// The compared side.
    pub b: String,
    /// Calls `a` allows (fully) that `b` refuses.
    pub syscalls_allowed: Vec<String>,
    /// Calls `a` allows with fewer argument checks than `b`.
    pub syscalls_less_checked: Vec<String>,
    /// Capabilities `a` has that `b` lacks.
    pub capabilities: Vec<String>,
    /// Other differences, as `field: a -> b`.
    pub settings: Vec<String>,
}

/// True when some arguments make `name` allowed under `a` and refused under `b`. The candidate
/// values are those the two profiles' checks compare against (and their neighbours), so every
/// region the rules distinguish is visited; the verdicts come from the compiled BPF.
fn allows_more(a: &Profile, b: &Profile, name: &str) -> bool {
    let mut cands: BTreeMap<u8, BTreeSet<u64>> = BTreeMap::new();
    for p in [a, b] {
        let r = p.seccomp.rules();
        for rule in r
            .allow
            .get(name)
            .into_iter()
            .chain(r.eperm.get(name))
            .flatten()
        {
            for c in &rule.checks {
                let set = cands.entry(c.index).or_default();
                set.extend([0, c.value, c.value.wrapping_add(1), c.value.wrapping_sub(1)]);
                if let crate::seccomp::Op::MaskedEq { mask } = c.op {
                    set.extend([mask, mask | c.value]);
                }
            }
        }
    }
    let axes: Vec<(u8, Vec<u64>)> = cands
        .into_iter()
        .map(|(i, s)| (i, s.into_iter().collect()))
        .collect();
    let mut args = [0u64; 6];
    fn walk(
        axes: &[(u8, Vec<u64>)],
        args: &mut [u64; 6],
        f: &mut dyn FnMut(&[u64; 6]) -> bool,
    ) -> bool {
        let Some(((i, vals), rest)) = axes.split_first() else {
            return f(args);
        };
        vals.iter().any(|&v| {
            args[*i as usize] = v;
            walk(rest, args, f)
        })
    }
    walk(&axes, &mut args, &mut |args| {
        a.seccomp.evaluate_name(name, args) == Some(crate::Verdict::Allow)
            && b.seccomp.evaluate_name(name, args) != Some(crate::Verdict::Allow)
    })
}

/// Builds `profiles diff A B`.
pub fn diff(a: &Profile, b: &Profile) -> DiffView {
    let (ra, rb) = (a.seccomp.rules(), b.seccomp.rules());
    let mut allowed = Vec::new();
    let mut less = Vec::new();
    for n in syscalls::all_names() {
        let (x, y) = (ra.access(n), rb.access(n));
        if x != Access::Denied && y == Access::Denied {
            allowed.push(n.to_string());
        } else if x != Access::Denied && allows_more(a, b, n) {
            less.push(n.to_string());
        }
    }
    let cb: BTreeSet<String> = b.caps.union().iter().map(|c| c.to_string()).collect();
    let caps = a
        .caps
        .union()
        .iter()
        .map(|c| c.to_string())
        .filter(|c| !cb.contains(c))
        .collect();
    let mut settings = Vec::new();
    macro_rules! cmp {
        ($name:expr, $x:expr, $y:expr) => {
            if $x != $y {
                settings.push(format!("{}: {} -> {}", $name, $x, $y));
            }
        };
    }
    let (sa, sb) = (&a.spec, &b.spec);
    cmp!("read-only root", sa.read_only_root, sb.read_only_root);
    cmp!(
        "network",
        format!("{:?}", sa.network),
        format!("{:?}", sb.network)
    );
    cmp!("non-root", sa.non_root, sb.non_root);
    cmp!("landlock", sa.landlock, sb.landlock);
    cmp!("require landlock", sa.require_landlock, sb.require_landlock);
    cmp!(
        "securebits",
        crate::caps::securebit_names(a.securebits).join("|"),
        crate::caps::securebit_names(b.securebits).join("|")
    );
    let (la, lb) = (&sa.limits, &sb.limits);
    cmp!("memory", la.memory, lb.memory);
    cmp!("processes", la.pids, lb.pids);
    cmp!("cpus", la.cpus, lb.cpus);
    cmp!("timeout", la.timeout, lb.timeout);
    cmp!("/tmp size", la.tmpfs, lb.tmpfs);
    cmp!("open files", la.nofile, lb.nofile);
    cmp!("output", la.output, lb.output);
    DiffView {
        a: a.tier.to_string(),
        b: b.tier.to_string(),
        syscalls_allowed: allowed,
        syscalls_less_checked: less,
        capabilities: caps,
        settings,
    }
}

/// `profiles diff` as text.
pub fn diff_text(d: &DiffView) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "What `{}` permits that `{}` does not", d.a, d.b);
    let _ = writeln!(o);
    let sec = |o: &mut String, title: &str, items: &[String]| {
        let _ = writeln!(o, "{title} ({})", items.len());
        if items.is_empty() {
            let _ = writeln!(o, "  (nothing)");
        }
        for chunk in items.chunks(8) {
            let _ = writeln!(o, "  {}", chunk.join(", "));
        }
        let _ = writeln!(o);
    };
    sec(
        &mut o,
        &format!("System calls `{}` refuses", d.b),
        &d.syscalls_allowed,
    );
    sec(
        &mut o,
        &format!("System calls `{}` checks more strictly", d.b),
        &d.syscalls_less_checked,
    );
    sec(&mut o, "Capabilities", &d.capabilities);
    let _ = writeln!(o, "Settings (`{}` -> `{}`)", d.a, d.b);
    if d.settings.is_empty() {
        let _ = writeln!(o, "  (same)");
    }
    for s in &d.settings {
        let _ = writeln!(o, "  {s}");
    }
    let _ = ENOSYS;
    o
}
