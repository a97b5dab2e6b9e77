//! Unit tests of OCI layout reading.

use std::path::Path;

use super::index::*;
use super::*;

#[test]
fn entry_names_are_cleaned_or_refused() {
    assert_eq!(clean_entry_name("./oci-layout", false), Ok("oci-layout"));
    assert_eq!(clean_entry_name("./", true), Ok(""));
    assert_eq!(clean_entry_name("blobs/sha256/", true), Ok("blobs/sha256"));
    assert_eq!(clean_entry_name(".", true), Ok(""));
    for bad in [
        "/etc/passwd",
        "../x",
        "blobs/../../x",
        "a//b",
        "blobs/./x",
        "",
    ] {
        assert!(clean_entry_name(bad, false).is_err(), "{bad}");
    }
}

#[test]
fn signature_refs_are_recognised() {
    let h = "a".repeat(64);
    assert!(is_signature_ref(&format!("sha256-{h}")));
    assert!(is_signature_ref(&format!("sha256-{h}.sig")));
    assert!(!is_signature_ref("v1"));
    assert!(!is_signature_ref(&format!("sha256-{}", "a".repeat(63))));
    assert!(!is_signature_ref(&format!("sha256-{h}x")));
}

#[test]
fn index_errors_name_the_field() {
    let p = Path::new("/l/index.json");
    let e = parse_index(
        br#"{"schemaVersion":2,"manifests":[{"digest":"md5:x","size":1}]}"#,
        p,
    )
    .unwrap_err();
    assert!(e.to_string().contains("manifests[0].digest"), "{e}");
    let e = parse_index(br#"{"schemaVersion":1,"manifests":[]}"#, p).unwrap_err();
    assert!(e.to_string().contains("schemaVersion"), "{e}");
    let e = parse_index(b"{", p).unwrap_err();
    assert!(e.to_string().contains("line 1 column"), "{e}");
    assert!(parse_index(b"\xff\xfe", p).is_err());
}

#[test]
fn error_stays_small_enough_to_wrap() {
    assert!(std::mem::size_of::<LayoutError>() <= 80);
}
