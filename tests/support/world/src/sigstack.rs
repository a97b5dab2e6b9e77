//! The sigstore-js mock stack (`tests/support/sigstack.js`) and signing in both layouts.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use base64::Engine as _;

use crate::http;
use crate::image::sha256_digest;
use crate::registry::{wait_for_line, which, Registry};

/// The certificate subject (a URI SAN) signatures carry unless told otherwise.
pub const DEFAULT_IDENTITY: &str =
    "https://github.com/perry-sandbox/demo/.github/workflows/release.yml@refs/heads/main";
/// The OIDC issuer signatures carry unless told otherwise.
pub const DEFAULT_ISSUER: &str = "https://token.actions.githubusercontent.com";

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// Where a signature is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Layout {
    /// A DSSE in-toto Sigstore bundle attached as an OCI referrer by `@sigstore/oci`; on
    /// docker-registry 2.8 (no referrers API) that is an OCI index at tag `sha256-<hex>`.
    #[default]
    ReferrersTag,
    /// A legacy cosign `sha256-<hex>.sig` manifest: simple-signing payload layer with the
    /// signature, certificate, chain and Rekor bundle in annotations.
    LegacySig,
}

/// How to sign. `Default` is a correct signature by [`DEFAULT_IDENTITY`] / [`DEFAULT_ISSUER`] in
/// the referrers-tag layout.
#[derive(Clone, Debug, Default)]
pub struct SignOptions {
    /// Which layout to attach in.
    pub layout: Layout,
    /// Certificate subject (URI); default [`DEFAULT_IDENTITY`].
    pub identity: Option<String>,
    /// OIDC issuer; default [`DEFAULT_ISSUER`].
    pub issuer: Option<String>,
    /// Sign a statement/payload naming this digest instead of the one it is attached to
    /// ("a signature made for digest A attached to image B").
    pub subject_digest: Option<String>,
    /// Legacy layout: the payload's `docker-reference`; default `127.0.0.1:PORT/<repo>`.
    pub docker_reference: Option<String>,
    /// Change the signed payload after signing (the signature no longer matches it).
    pub tamper: bool,
}

/// What signing produced (the control API's JSON answer).
#[derive(Clone, Debug)]
pub struct Signed {
    /// The layout used.
    pub layout: Layout,
    /// `{bundle, descriptor}` for referrers-tag; `{bundle, signature_b64, certificate_pem,
    /// chain_pem, rekor_bundle}` for legacy.
    pub response: serde_json::Value,
    /// Legacy layout: the payload bytes as pushed (after tampering, if asked).
    pub payload: Option<Vec<u8>>,
}

/// A running loopback Sigstore stack (Fulcio + CT log, Rekor v1/v2, TSA) with its trusted root.
/// Each stack has its own keys: a second stack is an "untrusted root" for the first.
pub struct SigStack {
    child: Mutex<Child>,
    _stdin: Mutex<Option<ChildStdin>>,
    control: String,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// `tests/support`, where `sigstack.js` and its `node_modules` live.
pub fn support_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/support")
        .to_path_buf()
}

fn ensure_node_modules() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = support_dir();
        if dir.join("node_modules/@sigstore/oci/package.json").exists()
            && dir.join("node_modules/promise-retry/package.json").exists()
        {
            return;
        }
        which("npm")
            .unwrap_or_else(|| panic!("npm not found (Debian npm; scripts/test installs it)"));
        let status = Command::new("npm")
            .args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(&dir)
            .status()
            .expect("run npm ci");
        assert!(status.success(), "npm ci --prefix {} failed", dir.display());
    });
}

impl SigStack {
    /// Starts a new, independent stack (fresh keys) in a temporary directory.
    pub fn start() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        Self::spawn(dir, Some(tmp), false)
    }

    /// One stack shared by every test in this process (started on first use; it exits when
    /// the process does, and removes its directory).
    pub fn shared() -> &'static SigStack {
        static SHARED: OnceLock<SigStack> = OnceLock::new();
        SHARED.get_or_init(|| {
            let dir = tempfile::Builder::new()
                .prefix("perry-sigstack-")
                .tempdir()
                .expect("tempdir")
                .keep();
            Self::spawn(dir, None, true)
        })
    }

    fn spawn(dir: PathBuf, tmp: Option<tempfile::TempDir>, cleanup: bool) -> Self {
        ensure_node_modules();
        which("node")
            .unwrap_or_else(|| panic!("node not found (Debian nodejs; scripts/test installs it)"));
        let stderr = std::fs::File::create(dir.join("sigstack.log")).expect("log");
        let mut cmd = Command::new("node");
        cmd.arg(support_dir().join("sigstack.js")).arg(&dir);
        if cleanup {
            cmd.arg("--cleanup");
        }
        let mut child = cmd
            .current_dir(support_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn node sigstack.js");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let control = match wait_for_line(stdout, "READY ") {
            Ok(url) => url,
            Err(out) => {
                let log = std::fs::read_to_string(dir.join("sigstack.log")).unwrap_or_default();
                let _ = child.kill();
                panic!("sigstack.js did not start:\n{out}\n{log}");
            }
        };
        Self {
            child: Mutex::new(child),
            _stdin: Mutex::new(stdin),
            control,
            dir,
            _tmp: tmp,
        }
    }

    /// The `trusted_root.json` describing this stack (Fulcio root, CT log, Rekor keys, TSA).
    pub fn trusted_root(&self) -> PathBuf {
        self.dir.join("trusted_root.json")
    }

    /// POSTs to the control API; panics with the node error on failure.
    fn call(&self, route: &str, body: &serde_json::Value) -> serde_json::Value {
        let r = http::request(
            "POST",
            &format!("{}{route}", self.control),
            &[("Content-Type", "application/json")],
            Some(&serde_json::to_vec(body).expect("json")),
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
            panic!(
                "sigstack {route}: HTTP {}: not JSON ({e}): {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )
        });
        assert_eq!(r.status, 200, "sigstack {route} failed: {}", v["error"]);
        v
    }

    /// Signs `digest` (a manifest or index in `repo` on `reg`) and attaches the signature.
    pub fn sign(&self, reg: &Registry, repo: &str, digest: &str, opts: &SignOptions) -> Signed {
        match opts.layout {
            Layout::ReferrersTag => self.sign_referrer(reg, repo, digest, opts),
            Layout::LegacySig => self.sign_legacy(reg, repo, digest, opts),
        }
    }

    /// Signs a DSSE in-toto statement about `digest` and returns the bundle JSON without
    /// attaching it anywhere.
    pub fn sign_detached(
        &self,
        image: &str,
        digest: &str,
        opts: &SignOptions,
    ) -> serde_json::Value {
        let mut body = self.image_request(image, digest, opts);
        body["attach"] = false.into();
        self.call("/sign-image", &body)["bundle"].clone()
    }

    fn image_request(&self, image: &str, digest: &str, opts: &SignOptions) -> serde_json::Value {
        serde_json::json!({
            "image": image,
            "attach_digest": digest,
            "subject_digest": opts.subject_digest.as_deref().unwrap_or(digest),
            "identity": opts.identity.as_deref().unwrap_or(DEFAULT_IDENTITY),
            "issuer": opts.issuer.as_deref().unwrap_or(DEFAULT_ISSUER),
            "tamper": opts.tamper,
        })
    }

    fn sign_referrer(
        &self,
        reg: &Registry,
        repo: &str,
        digest: &str,
        opts: &SignOptions,
    ) -> Signed {
        let body = self.image_request(&reg.repo_ref(repo), digest, opts);
        Signed {
            layout: Layout::ReferrersTag,
            response: self.call("/sign-image", &body),
            payload: None,
        }
    }

    /// Signs `payload` bytes with a Fulcio certificate, logged as a hashedrekord in Rekor v1.
    pub fn sign_blob(&self, payload: &[u8], identity: &str, issuer: &str) -> serde_json::Value {
        self.call(
            "/sign-blob",
            &serde_json::json!({
                "payload_b64": base64::engine::general_purpose::STANDARD.encode(payload),
                "identity": identity,
                "issuer": issuer,
            }),
        )
    }

    fn sign_legacy(&self, reg: &Registry, repo: &str, digest: &str, opts: &SignOptions) -> Signed {
        let signed_digest = opts.subject_digest.as_deref().unwrap_or(digest);
        let docker_reference = opts
            .docker_reference
            .clone()
            .unwrap_or_else(|| reg.repo_ref(repo));
        let payload = simple_signing_payload(&docker_reference, signed_digest, None);
        let response = self.sign_blob(
            &payload,
            opts.identity.as_deref().unwrap_or(DEFAULT_IDENTITY),
            opts.issuer.as_deref().unwrap_or(DEFAULT_ISSUER),
        );
        let payload = if opts.tamper {
            simple_signing_payload(&docker_reference, signed_digest, Some("tampered"))
        } else {
            payload
        };
        let str_field = |k: &str| response[k].as_str().map(str::to_string);
        let mut annotations = serde_json::Map::new();
        annotations.insert(
            "dev.cosignproject.cosign/signature".into(),
            response["signature_b64"].clone(),
        );
        if let Some(c) = str_field("certificate_pem") {
            annotations.insert("dev.sigstore.cosign/certificate".into(), c.into());
        }
        if let Some(c) = str_field("chain_pem") {
            annotations.insert("dev.sigstore.cosign/chain".into(), c.into());
        }
        if let Some(b) = str_field("rekor_bundle") {
            annotations.insert("dev.sigstore.cosign/bundle".into(), b.into());
        }
        push_legacy_layer(reg, repo, digest, &payload, annotations);
        Signed {
            layout: Layout::LegacySig,
            response,
            payload: Some(payload),
        }
    }
}

impl Drop for SigStack {
    fn drop(&mut self) {
        if let Ok(mut stdin) = self._stdin.lock() {
            drop(stdin.take());
        }
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A cosign simple-signing payload (`optional` set to `{"note": NOTE}` when given).
pub fn simple_signing_payload(docker_reference: &str, digest: &str, note: Option<&str>) -> Vec<u8> {
    let optional = match note {
        Some(n) => serde_json::json!({ "note": n }),
        None => serde_json::Value::Null,
    };
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": { "docker-reference": docker_reference },
            "image": { "docker-manifest-digest": digest },
            "type": "cosign container image signature",
        },
        "optional": optional,
    }))
    .expect("json")
}

/// Adds one signature layer to `repo:sha256-<hex>.sig` (creating the manifest, or appending to
/// it as cosign does).
pub fn push_legacy_layer(
    reg: &Registry,
    repo: &str,
    digest: &str,
    payload: &[u8],
    annotations: serde_json::Map<String, serde_json::Value>,
) {
    let tag = format!("{}.sig", digest.replace(':', "-"));
    let payload_digest = reg.put_blob(repo, payload);
    let mut layers: Vec<serde_json::Value> = reg
        .get_manifest(repo, &tag)
        .and_then(|(bytes, _)| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|m| m["layers"].as_array().cloned())
        .unwrap_or_default();
    layers.push(serde_json::json!({
        "mediaType": SIMPLE_SIGNING,
        "size": payload.len(),
        "digest": payload_digest,
        "annotations": annotations,
    }));
    let diff_ids: Vec<_> = layers.iter().map(|l| l["digest"].clone()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "", "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "", "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {},
    }))
    .expect("json");
    let config_digest = reg.put_blob(repo, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": config.len(),
            "digest": config_digest,
        },
        "layers": layers,
    }))
    .expect("json");
    reg.put_manifest(
        repo,
        &tag,
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    );
    debug_assert_eq!(sha256_digest(&manifest).len(), 71);
}
