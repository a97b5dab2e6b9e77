//! The rules in the OCI (docker/podman) seccomp format, for `perry-sandbox profiles export`.

use std::collections::BTreeSet;

use super::{ArgCheck, ArgRule, Op, SyscallRules, Width, ENOSYS, EPERM};
use crate::ProfileError;

/// The values of one argument that none of `refused` (single 32-bit equality checks on that
/// argument, like `ioctl`'s TIOCSTI/TIOCLINUX) matches, as libseccomp conditions: below the
/// smallest, above the largest, and each value in between. Values with the upper half set are
/// above the largest and so allowed by these; the EPERM rules (masked to 32 bits) still match
/// them, and libseccomp checks those first (the podman test probes exactly that case).
fn complement(name: &str, refused: &[ArgRule]) -> Result<Vec<serde_json::Value>, ProfileError> {
    use serde_json::json;
    let mut values = Vec::new();
    let mut index = None;
    for r in refused {
        match r.checks.as_slice() {
            [c] if c.op == Op::Eq
                && c.width == Width::Dword
                && index.is_none_or(|i| i == c.index) =>
            {
                index = Some(c.index);
                values.push(c.value);
            }
            _ => {
                return Err(ProfileError::NotExportable(format!(
                    "{name}: allowed except when {}; only single equality checks on one argument \
                     can be inverted for libseccomp",
                    r.describe()
                )))
            }
        }
    }
    let (Some(index), Some(&lo), Some(&hi)) = (index, values.iter().min(), values.iter().max())
    else {
        return Ok(vec![]);
    };
    if hi - lo > 64 {
        return Err(ProfileError::NotExportable(format!(
            "{name}: refused values {lo:#x}..{hi:#x} are too far apart to list the ones between"
        )));
    }
    let mut out = vec![
        json!({"index": index, "value": lo, "op": "SCMP_CMP_LT"}),
        json!({"index": index, "value": hi, "op": "SCMP_CMP_GT"}),
    ];
    for v in lo + 1..hi {
        if !values.contains(&v) {
            out.push(json!({"index": index, "value": v, "op": "SCMP_CMP_EQ"}));
        }
    }
    Ok(out)
}

/// The OCI runtime-spec / docker form of `rules` (`podman --security-opt seccomp=FILE`).
///
/// One libseccomp filter cannot stack, so the two filters are flattened: unconditional allows,
/// argument-conditioned allows, argument-conditioned EPERMs, unconditional EPERMs, default
/// ENOSYS. Differences from the native programs, all failing closed: x32 calls get the default
/// ENOSYS instead of a kill, and a conjunction of several checks on one argument (which runc would
/// turn into a disjunction) is refused.
pub fn oci_json(rules: &SyscallRules) -> Result<serde_json::Value, ProfileError> {
    use serde_json::json;
    let arg = |c: &ArgCheck| match (c.op, c.width) {
        (Op::MaskedEq { mask }, _) => {
            json!({"index": c.index, "value": mask, "valueTwo": c.value, "op": "SCMP_CMP_MASKED_EQ"})
        }
        // A 32-bit equality is written as a masked compare so the upper half cannot hide a match.
        (Op::Eq, Width::Dword) => {
            json!({"index": c.index, "value": 0xffff_ffffu64, "valueTwo": c.value, "op": "SCMP_CMP_MASKED_EQ"})
        }
        (Op::Eq, Width::Qword) => json!({"index": c.index, "value": c.value, "op": "SCMP_CMP_EQ"}),
        (Op::Ne, _) => json!({"index": c.index, "value": c.value, "op": "SCMP_CMP_NE"}),
        (Op::Lt, _) => json!({"index": c.index, "value": c.value, "op": "SCMP_CMP_LT"}),
        (Op::Gt, _) => json!({"index": c.index, "value": c.value, "op": "SCMP_CMP_GT"}),
    };
    let conditional = |name: &str, r: &ArgRule, action: serde_json::Value| {
        let idx: BTreeSet<u8> = r.checks.iter().map(|c| c.index).collect();
        if idx.len() != r.checks.len() {
            return Err(ProfileError::NotExportable(format!(
                "{name}: several checks on one argument ({}) cannot be expressed for runc",
                r.describe()
            )));
        }
        let mut v = json!({"names": [name], "args": r.checks.iter().map(arg).collect::<Vec<_>>(),
                           "comment": r.describe()});
        for (k, val) in action.as_object().expect("action is an object") {
            v[k] = val.clone();
        }
        Ok(v)
    };
    let allow_action = json!({"action": "SCMP_ACT_ALLOW"});
    let eperm_action = json!({"action": "SCMP_ACT_ERRNO", "errnoRet": EPERM});
    let mut out = Vec::new();
    let plain: Vec<&str> = rules
        .allow
        .iter()
        .filter(|(n, r)| r.is_empty() && !rules.eperm.contains_key(*n))
        .map(|(n, _)| n.as_str())
        .collect();
    out.push(json!({"names": plain, "action": "SCMP_ACT_ALLOW"}));
    for (name, rs) in &rules.eperm {
        if rs.is_empty() {
            continue;
        }
        for r in rs {
            out.push(conditional(name, r, eperm_action.clone())?);
        }
    }
    for (name, rs) in &rules.allow {
        if rules.eperm.get(name).is_some_and(Vec::is_empty) {
            continue;
        }
        if rs.is_empty() {
            if let Some(refused) = rules.eperm.get(name) {
                // libseccomp lets an unconditional allow override every conditional EPERM of
                // the same call (TIOCSTI went through under podman): allow the complement.
                for args in complement(name, refused)? {
                    out.push(
                        json!({"names": [name], "action": "SCMP_ACT_ALLOW", "args": [args],
                                    "comment": "any other value"}),
                    );
                }
            }
            continue;
        }
        for r in rs {
            out.push(conditional(name, r, allow_action.clone())?);
        }
    }
    let denied: Vec<&str> = rules
        .eperm
        .iter()
        .filter(|(_, r)| r.is_empty())
        .map(|(n, _)| n.as_str())
        .collect();
    out.push(json!({"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}));
    Ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": ENOSYS,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": out,
    }))
}
