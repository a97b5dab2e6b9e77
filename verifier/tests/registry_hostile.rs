//! A hostile registry: every way of serving bytes that do not match the digest asked for (or
//! announced) is refused, and so are oversized manifests and bearer-token flows done wrong.

mod registry_fake;

use std::sync::Arc;

use perry_policies::{Config, Digest, ImageRef};
use perry_testworld::{sha256_digest, TinyImage, TinyIndex};
use perry_verifier::registry::{Platform, RegistryClient, RegistryError, MAX_MANIFEST_SIZE};
use registry_fake::{FakeRegistry, Request, Response};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn client_for(host: &str, extra: &str) -> RegistryClient {
    let toml = format!("[registries.\"{host}\"]\ninsecure = true\n{extra}");
    RegistryClient::new(&Config::from_bytes(toml.as_bytes(), "t.toml".as_ref()).unwrap())
}

fn manifest(bytes: &[u8], media_type: &str) -> Response {
    Response::new(200, bytes.to_vec()).header("Content-Type", media_type)
}

fn is_mismatch(e: &RegistryError) -> bool {
    matches!(e, RegistryError::DigestMismatch { .. })
}

#[tokio::test]
async fn manifest_bytes_that_do_not_hash_to_the_requested_digest_are_refused() {
    let good = TinyImage::busybox_marked("amd64", "good");
    let evil = TinyImage::busybox_marked("amd64", "evil");
    let good_digest = good.digest();
    let evil_bytes = evil.manifest.clone();
    // Serves the evil manifest for the good digest, with and without a (lying) digest header.
    let gd = good_digest.clone();
    let fake = FakeRegistry::start(move |r: &Request| {
        if r.path == "/v2/" {
            return Response::new(200, "{}");
        }
        if r.path == format!("/v2/evil/app/manifests/{gd}") {
            return manifest(&evil_bytes, OCI_MANIFEST).header("Docker-Content-Digest", &gd);
        }
        if r.path == format!("/v2/evil/noheader/manifests/{gd}") {
            return manifest(&evil_bytes, OCI_MANIFEST);
        }
        Response::not_found()
    });
    let client = client_for(&fake.host(), "");
    let want = Digest::parse(&good_digest).unwrap();
    for repo in ["evil/app", "evil/noheader"] {
        let image = ImageRef::parse(&format!("{}/{repo}@{good_digest}", fake.host())).unwrap();
        let e = client
            .resolve(&image, &Platform::default())
            .await
            .unwrap_err();
        assert!(is_mismatch(&e), "{repo}: {e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(&fake.host()) && msg.contains(&good_digest),
            "{msg}"
        );
        let e = client.fetch_manifest(&image, &want).await.unwrap_err();
        assert!(is_mismatch(&e), "{repo}: {e:?}");
    }
}

#[tokio::test]
async fn a_tag_whose_digest_header_lies_is_refused() {
    let image = TinyImage::busybox_marked("amd64", "tag");
    let bytes = image.manifest.clone();
    let lie = TinyImage::busybox_marked("amd64", "lie").digest();
    let fake = FakeRegistry::start(move |r: &Request| match r.path.as_str() {
        "/v2/" => Response::new(200, "{}"),
        "/v2/demo/app/manifests/v1" => {
            manifest(&bytes, OCI_MANIFEST).header("Docker-Content-Digest", &lie)
        }
        _ => Response::not_found(),
    });
    let e = client_for(&fake.host(), "")
        .resolve(
            &ImageRef::parse(&format!("{}/demo/app:v1", fake.host())).unwrap(),
            &Platform::default(),
        )
        .await
        .unwrap_err();
    assert!(is_mismatch(&e), "{e:?}");
}

#[tokio::test]
async fn an_index_entry_served_with_other_bytes_is_refused() {
    let index = TinyIndex::two_platform("idx");
    let index_bytes = index.index.clone();
    let amd = index.image("amd64").digest();
    let other = TinyImage::busybox_marked("amd64", "swapped").manifest;
    let fake = FakeRegistry::start(move |r: &Request| {
        if r.path == "/v2/" {
            Response::new(200, "{}")
        } else if r.path == "/v2/demo/multi/manifests/v1" {
            manifest(&index_bytes, OCI_INDEX)
        } else if r.path == format!("/v2/demo/multi/manifests/{amd}") {
            manifest(&other, OCI_MANIFEST)
        } else {
            Response::not_found()
        }
    });
    let e = client_for(&fake.host(), "")
        .resolve(
            &ImageRef::parse(&format!("{}/demo/multi:v1", fake.host())).unwrap(),
            &Platform::default(),
        )
        .await
        .unwrap_err();
    assert!(is_mismatch(&e), "{e:?}");
    assert!(e
        .to_string()
        .contains(index.image("amd64").digest().as_str()));
}

#[tokio::test]
async fn a_blob_served_with_other_bytes_is_refused() {
    let image = TinyImage::busybox_marked("amd64", "blob");
    let want = image.digest_of_layer();
    let w = want.clone();
    let fake = FakeRegistry::start(move |r: &Request| {
        if r.path == "/v2/" {
            Response::new(200, "{}")
        } else if r.path == format!("/v2/demo/app/blobs/{w}") {
            Response::new(200, b"definitely not the layer".to_vec())
        } else {
            Response::not_found()
        }
    });
    let e = client_for(&fake.host(), "")
        .fetch_blob(
            &ImageRef::parse(&format!("{}/demo/app", fake.host())).unwrap(),
            &Digest::parse(&want).unwrap(),
            1 << 20,
        )
        .await
        .unwrap_err();
    assert!(is_mismatch(&e), "{e:?}");
}

#[tokio::test]
async fn oversized_and_malformed_manifests_are_refused() {
    let huge = {
        let mut v = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[],"pad":""#.to_vec();
        v.extend(std::iter::repeat_n(b'a', MAX_MANIFEST_SIZE));
        v.extend(br#""}"#);
        Arc::new(v)
    };
    let h = huge.clone();
    let fake = FakeRegistry::start(move |r: &Request| match r.path.as_str() {
        "/v2/" => Response::new(200, "{}"),
        "/v2/demo/huge/manifests/v1" => manifest(&h, OCI_MANIFEST),
        "/v2/demo/html/manifests/v1" => manifest(b"<html>hello</html>", OCI_MANIFEST),
        "/v2/demo/v1schema/manifests/v1" => {
            manifest(br#"{"schemaVersion":1,"fsLayers":[]}"#, OCI_MANIFEST)
        }
        _ => Response::not_found(),
    });
    let client = client_for(&fake.host(), "");
    let r = |repo: &str| ImageRef::parse(&format!("{}/{repo}:v1", fake.host())).unwrap();
    let e = client
        .resolve(&r("demo/huge"), &Platform::default())
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::TooLarge { .. }), "{e:?}");
    for repo in ["demo/html", "demo/v1schema"] {
        let e = client
            .resolve(&r(repo), &Platform::default())
            .await
            .unwrap_err();
        assert!(
            matches!(e, RegistryError::BadManifest { .. }),
            "{repo}: {e:?}"
        );
        assert!(e.to_string().contains(&fake.host()));
    }
}

#[tokio::test]
async fn bearer_token_from_config_is_sent_and_never_shown() {
    const TOKEN: &str = "tok-7f3a9c-secret";
    let image = TinyImage::busybox_marked("amd64", "bearer");
    let bytes = image.manifest.clone();
    let fake = FakeRegistry::start(move |r: &Request| {
        let authorized = r.header("authorization") == Some(&format!("Bearer {TOKEN}"));
        if !authorized {
            return Response::new(
                401,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )
            .header("Content-Type", "application/json")
            .header("WWW-Authenticate", "Basic realm=\"fake\"");
        }
        match r.path.as_str() {
            "/v2/" => Response::new(200, "{}"),
            "/v2/demo/app/manifests/v1" => manifest(&bytes, OCI_MANIFEST),
            _ => Response::not_found(),
        }
    });
    let image_ref = ImageRef::parse(&format!("{}/demo/app:v1", fake.host())).unwrap();
    let ok = client_for(&fake.host(), &format!("token = \"{TOKEN}\"\n"));
    let r = ok.resolve(&image_ref, &Platform::default()).await.unwrap();
    assert_eq!(r.digest.as_str(), sha256_digest(&image.manifest));
    assert!(!format!("{ok:?}").contains(TOKEN));

    let bad = client_for(&fake.host(), "token = \"wrong\"\n");
    let e = bad
        .resolve(&image_ref, &Platform::default())
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e:?}");
    assert!(!e.to_string().contains(TOKEN));
}
