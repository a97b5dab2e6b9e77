//! Every tier through `native::run` with the production [`ProfileStep`] and the tier's own
//! limits: it runs busybox, or it is refused before anything starts with an error that names
//! why. A sandbox *setup* failure (a step failing in the child) is never an acceptable answer:
//! `--tier default` once died at `Rlimit (#0): EPERM` because the tier's 65536 open files exceed
//! the host's hard limit, which a namespaced root cannot raise.

mod native_support;

use native_support::{rootfs, text};
use perry_policies::Tier;
use perry_runtime::native::{run, Limits, ProfileStep, RunError};

#[test]
fn every_tier_runs_busybox_or_is_refused_up_front() {
    let r = rootfs();
    for tier in [
        Tier::Default,
        Tier::Isolated,
        Tier::Hardened,
        Tier::Untrusted,
    ] {
        let profile =
            perry_profiles::Profile::for_tier(tier, None, &perry_profiles::Grants::default())
                .unwrap_or_else(|e| panic!("{tier:?}: no profile: {e}"));
        let step = match ProfileStep::new(&profile) {
            Ok(s) => s,
            Err(e) => {
                // Refused up front: the reason must be stated.
                assert!(
                    !e.to_string().is_empty(),
                    "{tier:?}: refusal without a reason"
                );
                eprintln!("{tier:?} refused up front: {e}");
                continue;
            }
        };
        let mut spec = r.sh("echo ran");
        spec.limits = Limits::from_tier(&tier.spec().limits);
        match run(&spec, &step) {
            Ok(o) => {
                assert_eq!(o.exit_code, Some(0), "{tier:?}: {}", text(&o.stderr));
                assert_eq!(text(&o.stdout), "ran\n", "{tier:?}");
            }
            Err(e @ RunError::Setup { .. }) => panic!("{tier:?}: sandbox setup failed: {e}"),
            Err(e) => panic!("{tier:?}: failed: {e}"),
        }
    }
}
