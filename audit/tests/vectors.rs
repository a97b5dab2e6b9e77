//! Interoperability: the RFC 6962 reference tree (every root, inclusion and consistency proof of
//! the 8-leaf tree) and the C2SP signed-note examples, from `tests/fixtures/`.

use perry_audit::merkle::{self, Hash};
use perry_audit::{Checkpoint, Note, NoteError, NoteVerifier};
use serde_json::Value;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn h(s: &Value) -> Hash {
    let s = s.as_str().unwrap();
    let mut out = [0u8; 32];
    for i in 0..32 {
        out[i] = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).unwrap();
    }
    out
}

fn hs(v: &Value) -> Vec<Hash> {
    v.as_array().unwrap().iter().map(h).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).unwrap())
        .collect()
}

#[test]
fn rfc6962_leaf_hashes_and_roots() {
    let t: Value = serde_json::from_str(&fixture("rfc6962_reference_tree_8.json")).unwrap();
    let leaves: Vec<Hash> = t["leaf_inputs_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| merkle::leaf_hash(&unhex(x.as_str().unwrap())))
        .collect();
    assert_eq!(leaves, hs(&t["leaf_hashes_hex"]));
    let roots = hs(&t["root_by_size_hex"]);
    assert_eq!(roots.len(), 9);
    let mut compact = merkle::CompactTree::new();
    for (n, root) in roots.iter().enumerate() {
        assert_eq!(&merkle::root_of(&leaves[..n]), root, "root of size {n}");
        assert_eq!(&compact.root(), root, "compact root of size {n}");
        if n < leaves.len() {
            compact.push(leaves[n]);
        }
    }
    assert_eq!(merkle::empty_root(), h(&t["empty_root_hex"]));
    // Every interior node of the reference tree, level by level.
    let levels = t["node_hashes_by_level_hex"].as_array().unwrap();
    assert_eq!(levels.len(), 4);
    let mut level = leaves.clone();
    for (depth, want) in levels.iter().enumerate() {
        assert_eq!(level, hs(want), "level {depth}");
        if level.len() == 1 {
            assert_eq!(level[0], roots[8]);
            break;
        }
        level = level
            .chunks(2)
            .map(|p| merkle::node_hash(&p[0], &p[1]))
            .collect();
    }
    // The roots agree with the derived-proofs file too.
    let d: Value = serde_json::from_str(&fixture("derived_all_proofs_8leaves.json")).unwrap();
    assert_eq!(hs(&d["roots_by_size_hex"]), roots);
    assert_eq!(hs(&d["leaf_hashes_hex"]), leaves);
}

#[test]
fn rfc6962_every_inclusion_proof() {
    let d: Value = serde_json::from_str(&fixture("derived_all_proofs_8leaves.json")).unwrap();
    let leaves = hs(&d["leaf_hashes_hex"]);
    let roots = hs(&d["roots_by_size_hex"]);
    let cases = d["inclusion"].as_array().unwrap();
    assert_eq!(
        cases.len(),
        36,
        "every (index, size) pair of the 8-leaf tree"
    );
    for c in cases {
        let i = c["leaf_index"].as_u64().unwrap();
        let n = c["tree_size"].as_u64().unwrap();
        let want = hs(&c["proof_hex"]);
        let got = merkle::inclusion_proof(i, &leaves[..n as usize]).unwrap();
        assert_eq!(got, want, "inclusion proof ({i}, {n})");
        merkle::verify_inclusion(i, n, &leaves[i as usize], &want, &roots[n as usize])
            .unwrap_or_else(|e| panic!("inclusion ({i}, {n}): {e}"));
        let wrong_root = roots[(n as usize % 8) + 1];
        if wrong_root != roots[n as usize] {
            assert!(
                merkle::verify_inclusion(i, n, &leaves[i as usize], &want, &wrong_root).is_err()
            );
        }
    }
}

#[test]
fn rfc6962_every_consistency_proof() {
    let d: Value = serde_json::from_str(&fixture("derived_all_proofs_8leaves.json")).unwrap();
    let leaves = hs(&d["leaf_hashes_hex"]);
    let roots = hs(&d["roots_by_size_hex"]);
    let cases = d["consistency"].as_array().unwrap();
    assert_eq!(
        cases.len(),
        36,
        "every (size1, size2) pair with 1 <= size1 <= size2 <= 8"
    );
    for c in cases {
        let m = c["size1"].as_u64().unwrap();
        let n = c["size2"].as_u64().unwrap();
        let want = hs(&c["proof_hex"]);
        let got = merkle::consistency_proof(m, &leaves[..n as usize]).unwrap();
        assert_eq!(got, want, "consistency proof ({m}, {n})");
        merkle::verify_consistency(m, n, &want, &roots[m as usize], &roots[n as usize])
            .unwrap_or_else(|e| panic!("consistency ({m}, {n}): {e}"));
        if m > 0 && m < n {
            assert!(
                merkle::verify_consistency(m, n, &want, &roots[m as usize - 1], &roots[n as usize])
                    .is_err(),
                "({m}, {n}) must reject a wrong old root"
            );
        }
    }
}

/// The fenced code blocks of a markdown file.
fn code_blocks(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        if line.starts_with("```") {
            match cur.take() {
                Some(b) => out.push(b),
                None => cur = Some(String::new()),
            }
        } else if let Some(b) = &mut cur {
            b.push_str(line);
            b.push('\n');
        }
    }
    out
}

#[test]
fn c2sp_signed_note_example_verifies() {
    let md = fixture("signed-note.md");
    let vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    assert!(md.contains(vkey));
    let v = NoteVerifier::parse(vkey).unwrap();
    assert_eq!(v.to_vkey(), vkey);
    let blocks = code_blocks(&md);
    let example = blocks
        .iter()
        .find(|b| b.starts_with("This is an example message."))
        .unwrap();
    let note = Note::parse(example).unwrap();
    assert_eq!(note.text, "This is an example message.\n");
    note.verify(&v).unwrap();
    let tampered = Note::parse(&example.replace("example message", "example massage")).unwrap();
    assert!(matches!(
        tampered.verify(&v),
        Err(NoteError::BadSignature(_))
    ));
    // The poem example parses (its key is not published, so it cannot be verified), and a key
    // that did not sign a note is "unknown", never "valid".
    let poem = blocks.iter().find(|b| b.starts_with("Ognuno")).unwrap();
    let pn = Note::parse(poem).unwrap();
    assert_eq!(pn.signatures[0].name, "quasimodo.example/salvatore");
    assert!(pn.text.contains("\n\ned è subito sera.\n"));
    assert!(matches!(pn.verify(&v), Err(NoteError::UnknownKey(_))));
}

#[test]
fn c2sp_checkpoint_example_parses() {
    let md = fixture("tlog-checkpoint.md");
    let blocks = code_blocks(&md);
    let note = Note::parse(&blocks[0]).unwrap();
    let cp = Checkpoint::parse_text(&note.text).unwrap();
    assert_eq!(cp.origin, "example.com/behind-the-sofa");
    assert_eq!(cp.size, 20_852_163);
    assert_eq!(cp.to_text(), note.text);
    assert_eq!(note.signatures[0].name, "example.com/behind-the-sofa");
    assert!(Checkpoint::parse_text("example.com/x\n012\nAAAA\n").is_err());
}
