//! The sandbox spec for one request: the image's config, the request's additions, the tier's
//! limits tightened (never loosened) by the request's.

use std::path::PathBuf;

use perry_policies::Config;
use perry_profiles::{NetworkMode, Profile};
use perry_runtime::manifest::ImageConfig;
use perry_runtime::native::{LeaseConfig, Limits, RunSpec};
use perry_runtime::pull::VerifiedRootfs;

use crate::{ExecError, ExecRequest};

/// The sandbox spec: the image's config, the request's additions, the tier's limits
/// tightened by the request's.
pub(crate) fn build(
    config: &Config,
    req: &ExecRequest,
    verified: &VerifiedRootfs,
    profile: &Profile,
) -> Result<RunSpec, ExecError> {
    let image: &ImageConfig = verified.config();
    // A mount target the image lacks is provided by the runner inside the sandbox's own mount
    // namespace; the verified rootfs is never written to.
    let exec = image.config.clone().unwrap_or_default();
    let (uid, gid) = identity(image, profile.non_root);
    let mut limits = Limits::from_tier(&profile.spec.limits);
    if let Some(t) = req.timeout {
        limits.timeout = limits.timeout.min(t);
    }
    if let Some(m) = req.memory {
        limits.memory = limits.memory.min(m);
    }
    if let Some(p) = req.pids {
        limits.pids = limits.pids.min(p);
    }
    let mut env: Vec<(String, String)> = exec
        .env
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in &req.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let output = profile.spec.limits.output.as_u64();
    let output = req.output_limit.map_or(output, |o| o.min(output)) as usize;
    let mut spec = RunSpec::new(
        verified.clone(),
        req.argv.clone(),
        LeaseConfig {
            state_dir: config.sandbox.state_dir.clone(),
            range: config.sandbox.uid_range,
        },
    );
    spec.env = env;
    spec.cwd = match &req.workdir {
        Some(w) if w.is_absolute() => w.clone(),
        Some(w) => {
            return Err(ExecError::InvalidRequest(format!(
                "working directory {} is not absolute",
                w.display()
            )))
        }
        None => exec
            .working_dir
            .filter(|w| w.starts_with('/'))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/")),
    };
    spec.mounts = req.mounts.clone();
    spec.uid = uid;
    spec.gid = gid;
    spec.limits = limits;
    spec.tmpfs_size = profile.tmpfs_bytes;
    spec.loopback = profile.network == NetworkMode::Granted;
    spec.stdout_limit = output;
    spec.stderr_limit = output;
    spec.stdin = req.stdin.clone();
    spec.live = req.live.clone();
    Ok(spec)
}

/// The image's `User` as numeric ids; names and root fall back to nobody (65534) when the tier
/// demands a non-root user.
pub fn identity(config: &ImageConfig, non_root: bool) -> (u32, u32) {
    let user = config
        .config
        .as_ref()
        .and_then(|c| c.user.clone())
        .unwrap_or_default();
    let mut it = user.splitn(2, ':');
    let uid = it.next().and_then(|u| u.parse::<u32>().ok());
    let gid = it.next().and_then(|g| g.parse::<u32>().ok()).or(uid);
    match (uid, gid) {
        (Some(u), Some(g)) if !(non_root && (u == 0 || g == 0)) => (u, g),
        _ if non_root => (65534, 65534),
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_user(user: Option<&str>) -> ImageConfig {
        let json = match user {
            Some(u) => format!(
                r#"{{"architecture":"amd64","os":"linux","config":{{"User":"{u}"}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
            ),
            None => {
                r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                    .to_string()
            }
        };
        ImageConfig::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn non_root_tiers_never_run_as_root() {
        assert_eq!(identity(&config_with_user(Some("0")), true), (65534, 65534));
        assert_eq!(
            identity(&config_with_user(Some("0:0")), true),
            (65534, 65534)
        );
        assert_eq!(
            identity(&config_with_user(Some("1000:0")), true),
            (65534, 65534)
        );
        assert_eq!(
            identity(&config_with_user(Some("root")), true),
            (65534, 65534)
        );
        assert_eq!(identity(&config_with_user(None), true), (65534, 65534));
        assert_eq!(
            identity(&config_with_user(Some("1000")), true),
            (1000, 1000)
        );
        assert_eq!(
            identity(&config_with_user(Some("1000:50")), true),
            (1000, 50)
        );
        assert_eq!(identity(&config_with_user(None), false), (0, 0));
    }
}
