//! C2SP signed notes (`c2sp.org/signed-note`) with Ed25519, and transparency-log checkpoints
//! (`c2sp.org/tlog-checkpoint`).
//!
//! Checkpoints are the small signed statements a reviewer keeps: origin, tree size and root. Using
//! the standard note format means existing tools (and other implementations) can check them too.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use zeroize::Zeroizing;

use crate::hex;
use crate::merkle::Hash;

/// Signature type byte for Ed25519 in note keys and key ids.
const ALG_ED25519: u8 = 0x01;
/// Largest note accepted; the spec asks for at least 16 signatures, this allows many more.
const MAX_NOTE: usize = 64 * 1024;
/// Most signature lines accepted on one note.
const MAX_SIGS: usize = 100;

/// Why a note, key or checkpoint was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    /// The note text is not well formed.
    #[error("malformed note: {0}")]
    Malformed(String),
    /// The verifier key string is not well formed.
    #[error("malformed verifier key: {0}")]
    BadKey(String),
    /// No signature from the trusted key is on the note.
    #[error("note has no signature from the trusted key {0}")]
    UnknownKey(String),
    /// A signature from the trusted key does not verify.
    #[error("signature by {0} does not verify")]
    BadSignature(String),
    /// The checkpoint body is not well formed.
    #[error("malformed checkpoint: {0}")]
    BadCheckpoint(String),
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// The recommended key id: SHA-256(name || 0x0A || 0x01 || public key)[:4].
pub fn key_id(name: &str, public: &[u8]) -> [u8; 4] {
    let mut c = ring::digest::Context::new(&ring::digest::SHA256);
    c.update(name.as_bytes());
    c.update(b"\n");
    c.update(&[ALG_ED25519]);
    c.update(public);
    let d = c.finish();
    let mut id = [0u8; 4];
    id.copy_from_slice(&d.as_ref()[..4]);
    id
}

/// An Ed25519 note verifier key: what reviewers are given to check checkpoints.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    public: [u8; 32],
}

impl fmt::Debug for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_vkey())
    }
}

impl NoteVerifier {
    /// Parses `<name>+<hex key id>+<base64(0x01 || public key)>`.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let vkey = vkey.trim();
        let mut parts = vkey.splitn(3, '+');
        let (name, idhex, b64) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => return Err(NoteError::BadKey("expected name+keyid+key".into())),
        };
        if !valid_name(name) {
            return Err(NoteError::BadKey(format!("bad key name `{name}`")));
        }
        if idhex.len() != 8 || !idhex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NoteError::BadKey("key id must be 8 hex digits".into()));
        }
        let id = u32::from_str_radix(idhex, 16)
            .map_err(|e| NoteError::BadKey(e.to_string()))?
            .to_be_bytes();
        let raw = B64
            .decode(b64)
            .map_err(|e| NoteError::BadKey(format!("key is not base64: {e}")))?;
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return Err(NoteError::BadKey(
                "only Ed25519 keys (type 0x01, 32 bytes) are supported".into(),
            ));
        }
        let mut public = [0u8; 32];
        public.copy_from_slice(&raw[1..]);
        if key_id(name, &public) != id {
            return Err(NoteError::BadKey(
                "key id does not match name and key".into(),
            ));
        }
        Ok(NoteVerifier {
            name: name.into(),
            id,
            public,
        })
    }

    /// The key name (for checkpoints, the log origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The vkey string, `<name>+<hex id>+<base64 key>`.
    pub fn to_vkey(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(&self.public);
        format!("{}+{}+{}", self.name, hex(&self.id), B64.encode(raw))
    }
}

/// An Ed25519 note signer. The PKCS#8 bytes are held in a zeroizing buffer; `Debug` shows only
/// the public verifier key.
pub struct NoteSigner {
    verifier: NoteVerifier,
    pair: Ed25519KeyPair,
    _pkcs8: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSigner({})", self.verifier.to_vkey())
    }
}

impl NoteSigner {
    /// Generates a new PKCS#8 Ed25519 private key.
    pub fn generate_pkcs8() -> Zeroizing<Vec<u8>> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).expect("the OS random source works");
        Zeroizing::new(doc.as_ref().to_vec())
    }

    /// A signer named `name` from a PKCS#8 private key.
    pub fn from_pkcs8(name: &str, pkcs8: Zeroizing<Vec<u8>>) -> Result<Self, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::BadKey(format!("bad key name `{name}`")));
        }
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
            .map_err(|e| NoteError::BadKey(format!("private key is not Ed25519 PKCS#8: {e}")))?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(NoteSigner {
            verifier: NoteVerifier {
                name: name.into(),
                id: key_id(name, &public),
                public,
            },
            pair,
            _pkcs8: pkcs8,
        })
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    /// Signs `text` (which must end in a newline) and returns the whole note.
    pub fn sign(&self, text: &str) -> String {
        debug_assert!(text.ends_with('\n'));
        let sig = self.pair.sign(text.as_bytes());
        let mut raw = self.verifier.id.to_vec();
        raw.extend_from_slice(sig.as_ref());
        format!(
            "{text}\n\u{2014} {} {}\n",
            self.verifier.name,
            B64.encode(raw)
        )
    }
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key id (first 4 bytes of the decoded signature).
    pub id: [u8; 4],
    /// The signature bytes after the key id.
    pub sig: Vec<u8>,
}

/// A parsed (not yet verified) signed note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The signed text, including its final newline.
    pub text: String,
    /// The signature lines.
    pub signatures: Vec<NoteSignature>,
}

impl Note {
    /// Parses a signed note; never panics on any input.
    pub fn parse(s: &str) -> Result<Note, NoteError> {
        let bad = |m: &str| NoteError::Malformed(m.into());
        if s.len() > MAX_NOTE {
            return Err(bad("note is too large"));
        }
        if s.chars()
            .any(|c| c.is_control() && c != '\n' && (c as u32) < 0x20)
        {
            return Err(bad("note contains control characters"));
        }
        let split = s
            .rfind("\n\n")
            .ok_or_else(|| bad("no blank line before the signatures"))?;
        let text = &s[..split + 1];
        let sigs = &s[split + 2..];
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(bad(
                "signature block must be non-empty and end in a newline",
            ));
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or_else(|| bad("signature line must start with an em dash and a space"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| bad("signature line needs a key name and a signature"))?;
            if !valid_name(name) {
                return Err(bad("bad key name on signature line"));
            }
            let raw = B64
                .decode(b64)
                .map_err(|_| bad("signature is not base64"))?;
            if raw.len() < 5 {
                return Err(bad("signature is too short"));
            }
            let mut id = [0u8; 4];
            id.copy_from_slice(&raw[..4]);
            signatures.push(NoteSignature {
                name: name.into(),
                id,
                sig: raw[4..].to_vec(),
            });
            if signatures.len() > MAX_SIGS {
                return Err(bad("too many signatures"));
            }
        }
        Ok(Note {
            text: text.into(),
            signatures,
        })
    }

    /// Checks the note against one trusted key: signatures from other keys are ignored, every
    /// signature from this key must verify, and at least one must be present.
    pub fn verify(&self, v: &NoteVerifier) -> Result<(), NoteError> {
        let mut seen = false;
        for s in &self.signatures {
            if s.name != v.name || s.id != v.id {
                continue;
            }
            seen = true;
            UnparsedPublicKey::new(&ED25519, &v.public)
                .verify(self.text.as_bytes(), &s.sig)
                .map_err(|_| NoteError::BadSignature(v.to_vkey()))?;
        }
        if seen {
            Ok(())
        } else {
            Err(NoteError::UnknownKey(v.to_vkey()))
        }
    }
}

/// A transparency-log checkpoint body: origin, tree size, root hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log identity.
    pub origin: String,
    /// Number of records covered.
    pub size: u64,
    /// RFC 6962 root over those records.
    pub root: Hash,
    /// Optional extension lines (this log writes none).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text for this checkpoint.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses a checkpoint from note text.
    pub fn parse_text(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = |m: String| NoteError::BadCheckpoint(m);
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("text must end in a newline".into()))?;
        let lines: Vec<&str> = body.split('\n').collect();
        if lines.len() < 3 {
            return Err(bad("needs origin, size and root lines".into()));
        }
        if lines.iter().any(|l| l.is_empty()) {
            return Err(bad("lines must be non-empty".into()));
        }
        let size_s = lines[1];
        if !size_s.bytes().all(|b| b.is_ascii_digit())
            || (size_s.len() > 1 && size_s.starts_with('0'))
        {
            return Err(bad(format!("bad tree size `{size_s}`")));
        }
        let size = size_s
            .parse()
            .map_err(|_| bad(format!("bad tree size `{size_s}`")))?;
        let raw = B64
            .decode(lines[2])
            .map_err(|_| bad("root hash is not base64".into()))?;
        let root: Hash = raw
            .try_into()
            .map_err(|_| bad("root hash is not 32 bytes".into()))?;
        Ok(Checkpoint {
            origin: lines[0].into(),
            size,
            root,
            extensions: lines[3..].iter().map(|s| s.to_string()).collect(),
        })
    }

    /// Parses a signed checkpoint note and verifies it with `v`.
    pub fn open(note: &str, v: &NoteVerifier) -> Result<Checkpoint, NoteError> {
        let n = Note::parse(note)?;
        let cp = Checkpoint::parse_text(&n.text)?;
        n.verify(v)?;
        Ok(cp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sign_and_verify_round_trip() {
        let s = NoteSigner::from_pkcs8("example.com/log", NoteSigner::generate_pkcs8()).unwrap();
        let cp = Checkpoint {
            origin: "example.com/log".into(),
            size: 5,
            root: [7; 32],
            extensions: vec![],
        };
        let note = s.sign(&cp.to_text());
        let v = NoteVerifier::parse(&s.verifier().to_vkey()).unwrap();
        assert_eq!(Checkpoint::open(&note, &v).unwrap(), cp);
        let other =
            NoteSigner::from_pkcs8("example.com/log", NoteSigner::generate_pkcs8()).unwrap();
        assert!(matches!(
            Checkpoint::open(&note, other.verifier()),
            Err(NoteError::UnknownKey(_))
        ));
        let forged = note.replace("\n5\n", "\n6\n");
        assert!(matches!(
            Checkpoint::open(&forged, &v),
            Err(NoteError::BadSignature(_))
        ));
        assert!(!format!("{s:?}").contains("PRIVATE"));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,200}") {
            let _ = Note::parse(&s);
            let _ = NoteVerifier::parse(&s);
            let _ = Checkpoint::parse_text(&s);
        }

        #[test]
        fn parsers_never_panic_on_note_shapes(a in "[a-z\n]{0,20}", n in "[a-z/.+ ]{0,10}", b in "[A-Za-z0-9+/=]{0,100}") {
            let _ = Note::parse(&format!("{a}\n\n\u{2014} {n} {b}\n"));
            let _ = Checkpoint::parse_text(&format!("{a}\n"));
        }
    }
}
