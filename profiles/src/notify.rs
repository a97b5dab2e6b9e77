//! The tier's two programs merged into one whose refusals go to a supervisor.
//!
//! The native runner does not stack the allowlist and the EPERM program: it installs one
//! program with `SECCOMP_FILTER_FLAG_NEW_LISTENER`, so every refused call reaches the run's
//! supervisor, which answers with exactly the errno the stacked filters would have returned and
//! counts it (`perry_runtime::native::ProfileStep`). [`merge_for_notification`] builds that
//! program from the compiled pair: the allowlist comes first, each of its `RET ALLOW` becomes a
//! jump to the start of the EPERM program (so an allowed call goes on to be checked there, as
//! with stacking), and every `RET ERRNO` in either part becomes `RET USER_NOTIF`. Kill returns
//! (foreign architecture, x32) stay kills. Instructions are replaced one for one, so every
//! jump offset keeps its meaning.
//!
//! It is computed once per compiled program ([`SeccompProgram::notify`](crate::SeccompProgram::notify)), i.e. once per tier
//! and configuration, like the programs themselves.

use seccompiler::sock_filter;

use crate::bpf::{
    check_size, stmt, AND_K, JA, JEQ_K, JGE_K, JGT_K, JSET_K, LD_W_ABS, RET_K,
    SECCOMP_RET_ACTION_FULL, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_USER_NOTIF,
};
use crate::ProfileError;

/// One program equivalent to stacking `allowlist` then `eperm`, with every `ERRNO` return
/// turned into `USER_NOTIF` (see the module docs). Fails when an instruction is not one the
/// crate's compiler emits (a `RET A` or an indirect load would escape the rewrite) or the
/// result is longer than the kernel accepts.
pub fn merge_for_notification(
    allowlist: &[sock_filter],
    eperm: &[sock_filter],
) -> Result<Vec<sock_filter>, ProfileError> {
    let mut out = Vec::with_capacity(allowlist.len() + eperm.len());
    for (i, f) in allowlist.iter().enumerate() {
        check_opcode(i, f)?;
        out.push(if f.code == RET_K {
            match f.k & SECCOMP_RET_ACTION_FULL {
                SECCOMP_RET_ALLOW => stmt(JA, (allowlist.len() - i - 1) as u32),
                SECCOMP_RET_ERRNO => stmt(RET_K, SECCOMP_RET_USER_NOTIF),
                _ => f.clone(),
            }
        } else {
            f.clone()
        });
    }
    for (i, f) in eperm.iter().enumerate() {
        check_opcode(allowlist.len() + i, f)?;
        out.push(
            if f.code == RET_K && f.k & SECCOMP_RET_ACTION_FULL == SECCOMP_RET_ERRNO {
                stmt(RET_K, SECCOMP_RET_USER_NOTIF)
            } else {
                f.clone()
            },
        );
    }
    check_size(&out)?;
    Ok(out)
}

/// Only absolute loads, `and`, jumps and `RET K` may appear (what the crate's compiler and the
/// seccompiler oracle emit): a `RET A` would return an unrewritten errno.
fn check_opcode(index: usize, f: &sock_filter) -> Result<(), ProfileError> {
    match f.code {
        LD_W_ABS | AND_K | JA | RET_K | JEQ_K | JGT_K | JGE_K | JSET_K => Ok(()),
        code => Err(ProfileError::Compile(format!(
            "instruction {index} has opcode {code:#x}, which the notification merge does not \
             rewrite"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use perry_policies::Tier;

    use super::*;
    use crate::seccomp::{run_bpf, Verdict, AUDIT_ARCH_X86_64};
    use crate::{Grants, Profile};

    /// For every syscall number and a spread of argument values, the merged program notifies
    /// exactly when the stacked programs return an errno, allows when they allow, kills when
    /// they kill.
    #[test]
    fn merged_program_matches_the_stacked_filters() {
        for tier in [
            Tier::Default,
            Tier::Isolated,
            Tier::Hardened,
            Tier::Untrusted,
        ] {
            let p = Profile::for_tier(tier, None, &Grants::default()).unwrap();
            let arg_sets: [[u64; 6]; 5] = [
                [0; 6],
                [1, 1, 0, 0, 0, 0],
                [2, 1, 0, 0, 0, 0],
                [0x1000_0000 | 0x11, 0, 0, 0, 0, 0],
                [u64::MAX; 6],
            ];
            for nr in 0..460 {
                for args in &arg_sets {
                    let want = p.seccomp.evaluate(AUDIT_ARCH_X86_64, nr, args);
                    let got = run_bpf(&p.seccomp.notify, AUDIT_ARCH_X86_64, nr, args)
                        .expect("the merged program only uses known opcodes");
                    match want {
                        Verdict::Allow => assert_eq!(got, SECCOMP_RET_ALLOW, "{tier:?} nr {nr}"),
                        Verdict::Errno(_) => {
                            assert_eq!(got, SECCOMP_RET_USER_NOTIF, "{tier:?} nr {nr} {args:?}")
                        }
                        Verdict::Kill => assert_eq!(got & 0xffff_0000, 0x8000_0000),
                    }
                }
            }
        }
    }

    #[test]
    fn an_instruction_the_merge_cannot_rewrite_is_refused() {
        // `RET A` (0x16) would return whatever the accumulator holds, errno or not.
        let ret_a = sock_filter {
            code: 0x16,
            jt: 0,
            jf: 0,
            k: 0,
        };
        let e = merge_for_notification(&[ret_a], &[]).unwrap_err();
        assert!(e.to_string().contains("0x16"), "{e}");
    }

    #[test]
    fn the_merged_program_is_computed_once_per_compiled_program() {
        let a = Profile::for_tier(Tier::Hardened, None, &Grants::default()).unwrap();
        let b = Profile::for_tier(Tier::Hardened, None, &Grants::default()).unwrap();
        assert!(std::ptr::eq(
            a.seccomp.notify.as_ptr(),
            b.seccomp.notify.as_ptr()
        ));
        assert_eq!(
            a.seccomp.notify.len(),
            a.seccomp.allowlist.len() + a.seccomp.eperm.len()
        );
    }
}
