//! OCI / Docker v2 manifest and image-config parsing: accepted shapes, and clear, located errors
//! for everything else.

use perry_runtime::manifest::{ImageConfig, ImageManifest, LayerMediaType, ManifestError};
use perry_runtime::unpack::plan_layers;
use proptest::prelude::*;

fn hex(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

fn oci_manifest(layer_types: &[&str]) -> String {
    let layers: Vec<String> = layer_types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                r#"{{"mediaType":"{t}","digest":"sha256:{}","size":{}}}"#,
                hex(char::from_digit(i as u32 + 1, 16).unwrap()),
                100 + i
            )
        })
        .collect();
    format!(
        r#"{{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":7}},
  "layers": [{}],
  "annotations": {{"org.opencontainers.image.created":"2024-01-01T00:00:00Z"}}
}}"#,
        hex('c'),
        layers.join(",")
    )
}

fn config(diff_ids: usize) -> String {
    let ids: Vec<String> = (0..diff_ids)
        .map(|i| {
            format!(
                r#""sha256:{}""#,
                hex(char::from_digit(i as u32 + 10, 16).unwrap())
            )
        })
        .collect();
    format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["sh"],"User":"1000"}},
"rootfs":{{"type":"layers","diff_ids":[{}]}},"history":[]}}"#,
        ids.join(",")
    )
}

#[test]
fn oci_manifest_with_all_layer_kinds_parses() {
    let m = ImageManifest::parse(
        oci_manifest(&[
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ])
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(m.schema_version, 2);
    assert_eq!(m.config.digest.hex(), hex('c'));
    assert_eq!(m.config.size, 7);
    assert_eq!(
        m.layer_media_types(),
        vec![
            LayerMediaType::Tar,
            LayerMediaType::TarGzip,
            LayerMediaType::TarZstd
        ]
    );
    assert_eq!(m.layers[2].size, 102);
}

#[test]
fn docker_v2_manifest_parses() {
    let doc = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
"config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":1,"digest":"sha256:{}"}},
"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":5,"digest":"sha256:{}"}}]}}"#,
        hex('a'),
        hex('b')
    );
    let m = ImageManifest::parse(doc.as_bytes()).unwrap();
    assert_eq!(m.layer_media_types(), vec![LayerMediaType::TarGzip]);
}

#[test]
fn indexes_are_refused_with_a_hint() {
    for doc in [
        r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
        r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#,
        r#"{"schemaVersion":2,"manifests":[]}"#,
    ] {
        let err = ImageManifest::parse(doc.as_bytes()).unwrap_err();
        assert!(matches!(err, ManifestError::IsIndex(_)), "{err}");
        assert!(err.to_string().contains("resolve the platform"));
    }
}

#[test]
fn bad_layer_digest_names_the_field_line_and_column() {
    let doc = oci_manifest(&[
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar",
    ])
    .replace(&format!("sha256:{}", hex('2')), "sha512:abc");
    let err = ImageManifest::parse(doc.as_bytes()).unwrap_err();
    match &err {
        ManifestError::Json {
            path,
            line,
            column,
            message,
            ..
        } => {
            assert_eq!(path, "layers[1].digest");
            assert_eq!(*line, 5);
            assert!(*column > 1);
            assert!(message.contains("sha256"), "{message}");
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("image manifest: at `layers[1].digest` (line 5"),
        "{err}"
    );
}

#[test]
fn unsupported_layer_media_types_are_refused_by_index() {
    for bad in [
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+bzip2",
        "text/plain",
    ] {
        let doc = oci_manifest(&["application/vnd.oci.image.layer.v1.tar", bad]);
        let err = ImageManifest::parse(doc.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, ManifestError::LayerMediaType { index: 1, media_type } if media_type == bad),
            "{err}"
        );
        assert!(err.to_string().contains("layers[1].mediaType"));
    }
}

#[test]
fn wrong_schema_version_and_media_type_are_refused() {
    let doc = oci_manifest(&[]).replace("\"schemaVersion\": 2", "\"schemaVersion\": 1");
    assert!(matches!(
        ImageManifest::parse(doc.as_bytes()).unwrap_err(),
        ManifestError::SchemaVersion(1)
    ));
    let doc = oci_manifest(&[]).replace(
        "application/vnd.oci.image.manifest.v1+json",
        "application/json",
    );
    assert!(matches!(
        ImageManifest::parse(doc.as_bytes()).unwrap_err(),
        ManifestError::MediaType(_)
    ));
    let err = ImageManifest::parse(b"{\"schemaVersion\":2,\"layers\":[]}").unwrap_err();
    assert!(
        matches!(&err, ManifestError::Json { message, .. } if message.contains("config")),
        "{err}"
    );
}

#[test]
fn config_parses_diff_ids_and_exec_defaults() {
    let c = ImageConfig::parse(config(2).as_bytes()).unwrap();
    assert_eq!(c.rootfs.diff_ids.len(), 2);
    assert_eq!(c.rootfs.diff_ids[1].hex(), hex('b'));
    let exec = c.config.unwrap();
    assert_eq!(exec.cmd, Some(vec!["sh".to_string()]));
    assert_eq!(exec.user.as_deref(), Some("1000"));
    assert_eq!(c.os.as_deref(), Some("linux"));
}

#[test]
fn config_errors_are_located() {
    let doc = config(2).replace("\"type\":\"layers\"", "\"type\":\"snapshots\"");
    assert!(
        matches!(ImageConfig::parse(doc.as_bytes()).unwrap_err(), ManifestError::RootfsType(t) if t == "snapshots")
    );
    let doc = config(2).replacen(&format!("sha256:{}", hex('a')), "sha256:XYZ", 1);
    let err = ImageConfig::parse(doc.as_bytes()).unwrap_err();
    assert!(
        matches!(&err, ManifestError::Json { path, .. } if path == "rootfs.diff_ids"),
        "{err}"
    );
}

#[test]
fn plan_layers_pairs_layers_with_diff_ids_and_refuses_a_count_mismatch() {
    let m = ImageManifest::parse(
        oci_manifest(&[
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar",
        ])
        .as_bytes(),
    )
    .unwrap();
    let plan = plan_layers(&m, &ImageConfig::parse(config(2).as_bytes()).unwrap()).unwrap();
    assert_eq!(plan.len(), 2);
    assert_eq!(plan[0].media_type, LayerMediaType::TarGzip);
    assert_eq!(plan[0].digest.hex(), hex('1'));
    assert_eq!(plan[1].diff_id.hex(), hex('b'));
    let err = plan_layers(&m, &ImageConfig::parse(config(3).as_bytes()).unwrap()).unwrap_err();
    assert!(
        matches!(
            err,
            ManifestError::LayerCount {
                layers: 2,
                diff_ids: 3
            }
        ),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Parsers never panic, whatever the bytes.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ImageManifest::parse(&bytes);
        let _ = ImageConfig::parse(&bytes);
    }

    /// Mutating one byte of a valid manifest either still parses or gives an error; never a panic.
    #[test]
    fn mutated_manifests_never_panic(pos in 0usize..400, byte in any::<u8>()) {
        let mut doc = oci_manifest(&["application/vnd.oci.image.layer.v1.tar+gzip"]).into_bytes();
        let p = pos % doc.len();
        doc[p] = byte;
        let _ = ImageManifest::parse(&doc);
    }
}
