//! Registry credentials from `[registries."host"]`: inline, or a docker `config.json`.

use std::collections::BTreeMap;
use std::path::Path;

use oci_client::secrets::RegistryAuth;
use perry_policies::Secret;
use serde::Deserialize;
use zeroize::Zeroizing;

/// Credentials for one registry, resolved from configuration. `Debug` never shows secrets.
#[derive(Clone, Debug)]
pub(super) enum Credentials {
    Anonymous,
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

impl Credentials {
    /// The form oci-client wants. This copy lives only for one request; oci-client keeps its own
    /// for token refresh.
    pub(super) fn to_auth(&self) -> RegistryAuth {
        match self {
            Self::Anonymous => RegistryAuth::Anonymous,
            Self::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.expose().to_string())
            }
            Self::Bearer(t) => RegistryAuth::Bearer(t.expose().to_string()),
        }
    }
}

/// The `auths` section of a docker `config.json`.
#[derive(Deserialize)]
pub(super) struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, serde_json::Value>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct DockerAuth {
    auth: Option<Secret>,
    username: Option<String>,
    password: Option<Secret>,
    registrytoken: Option<Secret>,
}

/// Reads credentials for `host` from a docker `config.json`. The file must not be readable by
/// group or others (it holds secrets). Errors never contain a secret.
pub(super) fn docker_config_credentials(path: &Path, host: &str) -> Result<Credentials, String> {
    let shown = path.display();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            // The entry only points at a file; a file that is not there holds no credentials
            // (public images need none): anonymous access, as docker does without a login.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(
                    "{shown} does not exist: no credentials for {host}, accessing it anonymously"
                );
                return Ok(Credentials::Anonymous);
            }
            Err(e) => return Err(format!("{shown}: {e}")),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{shown}: holds secrets but has mode {mode:o}; chmod 600 it"
            ));
        }
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?);
    let cfg: DockerConfig = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{shown}: line {} column {}: not a docker config.json ({})",
            e.line(),
            e.column(),
            e.classify_str()
        )
    })?;
    let candidates: Vec<String> = if host == "docker.io" {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![
            host.to_string(),
            format!("https://{host}"),
            format!("http://{host}"),
            format!("https://{host}/v1/"),
            format!("https://{host}/v2/"),
        ]
    };
    let Some((key, entry)) = candidates
        .iter()
        .find_map(|k| cfg.auths.get(k).map(|e| (k, e)))
    else {
        if cfg.cred_helpers.contains_key(host) || cfg.creds_store.is_some() {
            return Err(format!(
                "{shown}: credentials for {host} are in a credential helper, which perry-sandbox does not run; put them in [registries.\"{host}\"]"
            ));
        }
        return Ok(Credentials::Anonymous);
    };
    if let Some(token) = &entry.registrytoken {
        return Ok(Credentials::Bearer(token.clone()));
    }
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Credentials::Basic {
            username: u.clone(),
            password: p.clone(),
        });
    }
    if let Some(auth) = &entry.auth {
        use base64::Engine as _;
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(auth.expose().trim())
                .map_err(|_| format!("{shown}: auths.\"{key}\".auth is not base64"))?,
        );
        let text = std::str::from_utf8(&decoded)
            .map_err(|_| format!("{shown}: auths.\"{key}\".auth is not UTF-8"))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| format!("{shown}: auths.\"{key}\".auth is not `user:password`"))?;
        return Ok(Credentials::Basic {
            username: u.to_string(),
            password: Secret::new(p.to_string()),
        });
    }
    Ok(Credentials::Anonymous)
}

/// Classifies a serde_json error without echoing input (which may contain a secret).
pub(super) trait ClassifyStr {
    fn classify_str(&self) -> &'static str;
}

impl ClassifyStr for serde_json::Error {
    fn classify_str(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected structure",
            serde_json::error::Category::Eof => "unexpected end of file",
        }
    }
}
