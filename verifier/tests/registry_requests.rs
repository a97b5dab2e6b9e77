//! How many requests a registry sees: a client resolving the same tag again (the service, once
//! per call) must not repeat the `/v2/` authentication probe of a registry that asked for no
//! authentication — and must still follow a registry that does ask for it.

mod registry_fake;

use perry_policies::{Config, ImageRef};
use perry_testworld::{sha256_digest, TinyImage};
use perry_verifier::registry::{Platform, RegistryClient};
use registry_fake::{FakeRegistry, Request, Response};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn client_for(host: &str) -> RegistryClient {
    let toml = format!("[registries.\"{host}\"]\ninsecure = true\n");
    RegistryClient::new(&Config::from_bytes(toml.as_bytes(), "t.toml".as_ref()).unwrap())
}

/// Requests for `path` (query string ignored).
fn count(fake: &FakeRegistry, path: &str) -> usize {
    fake.requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path.split('?').next() == Some(path))
        .count()
}

#[tokio::test]
async fn an_anonymous_registry_is_probed_once_per_client_not_before_every_request() {
    let image = TinyImage::busybox_marked("amd64", "anonymous");
    let bytes = image.manifest.clone();
    let fake = FakeRegistry::start(move |r: &Request| match r.path.as_str() {
        "/v2/" => Response::new(200, "{}"),
        "/v2/demo/app/manifests/v1" => {
            Response::new(200, bytes.clone()).header("Content-Type", OCI_MANIFEST)
        }
        _ => Response::not_found(),
    });
    let client = client_for(&fake.host());
    let tag = ImageRef::parse(&format!("{}/demo/app:v1", fake.host())).unwrap();
    for _ in 0..3 {
        let r = client.resolve(&tag, &Platform::default()).await.unwrap();
        assert_eq!(r.digest.as_str(), sha256_digest(&image.manifest));
    }
    assert_eq!(count(&fake, "/v2/demo/app/manifests/v1"), 3);
    assert_eq!(
        count(&fake, "/v2/"),
        1,
        "{:?}",
        fake.requests.lock().unwrap()
    );
}

#[tokio::test]
async fn a_registry_that_asks_for_a_token_still_gets_the_token_flow() {
    let image = TinyImage::busybox_marked("amd64", "bearer-flow");
    let bytes = image.manifest.clone();
    let host = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let h = host.clone();
    let fake = FakeRegistry::start(move |r: &Request| {
        let authorized = r.header("authorization") == Some("Bearer anon-token");
        match r.path.as_str() {
            p if p.starts_with("/token") => Response::new(200, r#"{"token":"anon-token"}"#)
                .header("Content-Type", "application/json"),
            "/v2/demo/app/manifests/v1" if authorized => {
                Response::new(200, bytes.clone()).header("Content-Type", OCI_MANIFEST)
            }
            _ => Response::new(401, r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#).header(
                "WWW-Authenticate",
                &format!(
                    "Bearer realm=\"http://{}/token\",service=\"fake\"",
                    h.lock().unwrap()
                ),
            ),
        }
    });
    *host.lock().unwrap() = fake.host();
    let client = client_for(&fake.host());
    let tag = ImageRef::parse(&format!("{}/demo/app:v1", fake.host())).unwrap();
    for _ in 0..2 {
        let r = client.resolve(&tag, &Platform::default()).await.unwrap();
        assert_eq!(r.digest.as_str(), sha256_digest(&image.manifest));
    }
    // One probe and one token for both resolutions (the token is cached), never anonymous.
    assert_eq!(
        count(&fake, "/v2/"),
        1,
        "{:?}",
        fake.requests.lock().unwrap()
    );
    assert_eq!(count(&fake, "/token"), 1);
}
