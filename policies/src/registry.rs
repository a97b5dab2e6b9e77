//! `[registries."host:port"]`: how to reach a registry and with which credentials.
//!
//! Plain HTTP is refused for every host that is not loopback: a man in the middle could not forge
//! a signature, but it could serve a different manifest and learn what we pull. Credentials are
//! [`Secret`]s and never leave this process in a printable form.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Settings for one registry, keyed by its `host[:port]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Speak plain HTTP. Only allowed for loopback hosts (tests, local mirrors).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// A docker `config.json` to read credentials for this host from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_config: Option<PathBuf>,
    /// User name for basic auth (with `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password for basic auth. Never printed; the file holding it must be 0600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A bearer token. Never printed; the file holding it must be 0600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
}

impl RegistryConfig {
    /// True when the file this came from holds a secret inline (and so must not be readable
    /// by other users).
    pub fn has_inline_secret(&self) -> bool {
        self.password.is_some() || self.token.is_some()
    }
}

/// True for `localhost`, `127.0.0.0/8` and `::1`, with or without a port.
pub fn is_loopback_host(host_port: &str) -> bool {
    if let Ok(ip) = host_port.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host_port
            }
        })
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.8.9.1",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "localhost.evil.com",
            "128.0.0.1",
            "[::2]:80",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
