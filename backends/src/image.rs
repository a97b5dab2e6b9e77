//! [`PinnedImage`]: the only image a backend can be asked to run.

use perry_verifier::{Origin, VerifiedImage};

/// A verified image, named by digest (`repo@sha256:…`). Made only from a [`VerifiedImage`]:
/// private fields, no `Default`, no `Deserialize`, no other constructor, so a raw string or a
/// tag cannot reach [`crate::ContainerBackend::create`] (see `tests/compile_fail`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedImage {
    pinned: String,
    repository: String,
    digest: String,
    registry: String,
    origin: Origin,
}

impl PinnedImage {
    /// The pinned form of a verified image.
    pub fn from_verified(v: &VerifiedImage) -> Self {
        let repository = v.reference().name().to_string();
        let registry = repository.split('/').next().unwrap_or_default().to_string();
        PinnedImage {
            pinned: v.pinned_reference(),
            repository,
            digest: v.platform_digest().to_string(),
            registry,
            origin: v.origin().clone(),
        }
    }

    /// `registry/repository@sha256:<platform manifest>`.
    pub fn reference(&self) -> &str {
        &self.pinned
    }

    /// `registry/repository`, without tag or digest.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// `sha256:<hex>` of the verified platform manifest.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Where the verified bytes are: the registry, or an OCI layout/archive.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// True when the registry is on loopback (`127.0.0.1`, `localhost`, `[::1]`): the only case
    /// where pulling over plain HTTP without TLS verification is allowed.
    pub fn registry_is_loopback(&self) -> bool {
        is_loopback_registry(&self.registry)
    }
}

/// Whether a registry host (with optional port) is on loopback.
pub fn is_loopback_registry(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    h == "localhost" || h == "::1" || h.starts_with("127.") && h.split('.').count() == 4
}

#[cfg(test)]
mod tests {
    use super::is_loopback_registry;

    #[test]
    fn only_loopback_registries_count_as_loopback() {
        for h in [
            "127.0.0.1:5000",
            "localhost:1",
            "localhost",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback_registry(h), "{h}");
        }
        for h in [
            "docker.io",
            "127.0.0.1.evil.com:5000",
            "10.0.0.1:5000",
            "localhostx:1",
            "cgr.dev",
        ] {
            assert!(!is_loopback_registry(h), "{h}");
        }
    }
}
