//! A real `docker-registry` (CNCF distribution 2.8) on a free loopback port.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http;
use crate::image::{sha256_digest, TinyImage, TinyIndex};

/// OCI manifest media type.
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI index media type.
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A running registry; stopped (and its storage deleted) on drop.
pub struct Registry {
    auth: Option<String>,
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
    _dir: tempfile::TempDir,
}

/// What a push produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// `sha256:<hex>` of the top-level manifest or index.
    pub digest: String,
    /// For an index: `(architecture, platform manifest digest)` pairs.
    pub platforms: Vec<(String, String)>,
}

impl Pushed {
    /// The digest of the platform manifest for `architecture` (panics for a single image).
    pub fn platform(&self, architecture: &str) -> &str {
        self.platforms
            .iter()
            .find(|(a, _)| a == architecture)
            .map(|(_, d)| d.as_str())
            .unwrap_or_else(|| panic!("no {architecture} platform in {:?}", self.platforms))
    }
}

/// Runs `docker-registry serve CONFIG` and stops it when our end of stdin closes (test
/// finished, or test process died); exits when the registry does (so a failed start is seen).
const SUPERVISOR: &str = r#"exec 3<&0; "$0" serve "$1" </dev/null & p=$!; (read _ignored <&3; kill $p 2>/dev/null) & wait $p"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

impl Registry {
    /// Starts `docker-registry serve` on a free 127.0.0.1 port with temporary storage and waits
    /// until `/v2/` answers. The registry runs under a small `sh` supervisor that stops it when
    /// this process's end of its stdin closes, so a test that dies leaves nothing behind.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// Like [`Registry::start`], but every request needs HTTP basic auth as `user`/`password`
    /// (distribution's `htpasswd` auth). The helpers on this type send the credentials.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Self {
        Self::start_inner(Some((user, password)))
    }

    fn start_inner(basic: Option<(&str, &str)>) -> Self {
        let bin = which("docker-registry").unwrap_or_else(|| {
            panic!("docker-registry not found in PATH (Debian package docker-registry; scripts/test installs it)")
        });
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let cfg = dir.path().join("config.yml");
            let mut text = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            );
            if let Some((user, password)) = basic {
                let htpasswd = dir.path().join("htpasswd");
                let hash = bcrypt::hash(password, 4).expect("bcrypt");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("htpasswd");
                text.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: perry-testworld\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            std::fs::write(&cfg, text).expect("write registry config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(SUPERVISOR)
                .arg(&bin)
                .arg(&cfg)
                .stdin(Stdio::piped())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn docker-registry");
            let stdin = child.stdin.take();
            let mut reg = Registry {
                auth: basic.map(|(u, p)| {
                    use base64::Engine as _;
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                    )
                }),
                child,
                stdin,
                port,
                _dir: dir,
            };
            if reg.wait_ready(Duration::from_secs(15)) {
                return reg;
            }
            let log =
                std::fs::read_to_string(reg._dir.path().join("registry.log")).unwrap_or_default();
            reg.stop();
            eprintln!("docker-registry on port {port} did not come up, retrying: {log}");
        }
        panic!("docker-registry did not start after 5 attempts");
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let probe = http::try_request(
                "GET",
                &format!("{}/v2/", self.base()),
                &self.headers(&[]),
                None,
            );
            if probe.is_ok_and(|r| r.status == 200) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stops the registry now (tests of an unreachable registry); dropping it does the same.
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn headers<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut h = extra.to_vec();
        if let Some(a) = &self.auth {
            h.push(("Authorization", a.as_str()));
        }
        h
    }

    /// `127.0.0.1:PORT`: the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the registry keeps the bytes of blob `digest` (`sha256:<hex>`) on disk: tests
    /// overwrite it to play a registry whose storage was tampered with after verification.
    pub fn blob_data_path(&self, digest: &str) -> std::path::PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self._dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT/<repo>`.
    pub fn repo_ref(&self, repo: &str) -> String {
        format!("{}/{repo}", self.host())
    }

    /// Uploads a blob (POST + monolithic PUT); returns its digest.
    pub fn put_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        let r = http::ok(
            "POST",
            &format!("{}/v2/{repo}/blobs/uploads/", self.base()),
            &self.headers(&[]),
            Some(b""),
        );
        let loc = r.location.expect("upload Location header");
        let loc = if loc.starts_with("http") {
            loc
        } else {
            format!("{}{loc}", self.base())
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        http::ok(
            "PUT",
            &format!("{loc}{sep}digest={digest}"),
            &self.headers(&[("Content-Type", "application/octet-stream")]),
            Some(bytes),
        );
        digest
    }

    /// PUTs manifest bytes under a tag or digest; returns the digest of the bytes.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        http::ok(
            "PUT",
            &format!("{}/v2/{repo}/manifests/{reference}", self.base()),
            &self.headers(&[("Content-Type", media_type)]),
            Some(bytes),
        );
        sha256_digest(bytes)
    }

    /// GETs a manifest by tag or digest: `Some((bytes, content type))`, or `None` when absent.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Option<(Vec<u8>, String)> {
        let accept = [
            OCI_MANIFEST,
            OCI_INDEX,
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        ]
        .join(", ");
        let r = http::request(
            "GET",
            &format!("{}/v2/{repo}/manifests/{reference}", self.base()),
            &self.headers(&[("Accept", &accept)]),
            None,
        );
        match r.status {
            200 => Some((r.body, r.content_type.unwrap_or_default())),
            404 => None,
            s => panic!("GET manifest {repo}:{reference}: HTTP {s}"),
        }
    }

    /// Pushes an image's blobs and manifest, tagged `tag`.
    pub fn push_image(&self, repo: &str, tag: &str, image: &TinyImage) -> Pushed {
        self.put_blob(repo, &image.config);
        self.put_blob(repo, &image.layer);
        let digest = self.put_manifest(repo, tag, OCI_MANIFEST, &image.manifest);
        assert_eq!(digest, image.digest());
        Pushed {
            digest,
            platforms: vec![],
        }
    }

    /// Pushes every platform image (by digest) and the index, tagged `tag`.
    pub fn push_index(&self, repo: &str, tag: &str, index: &TinyIndex) -> Pushed {
        let mut platforms = Vec::new();
        for image in &index.images {
            self.put_blob(repo, &image.config);
            self.put_blob(repo, &image.layer);
            let d = self.put_manifest(repo, &image.digest(), OCI_MANIFEST, &image.manifest);
            platforms.push((image.architecture.clone(), d));
        }
        let digest = self.put_manifest(repo, tag, OCI_INDEX, &index.index);
        Pushed { digest, platforms }
    }

    /// Points `tag` at the manifest (or index) `digest` already in `repo`: "the tag moved".
    pub fn move_tag(&self, repo: &str, tag: &str, digest: &str) {
        let (bytes, media_type) = self
            .get_manifest(repo, digest)
            .unwrap_or_else(|| panic!("{repo}@{digest} is not in the registry"));
        let media_type = if media_type.is_empty() {
            OCI_MANIFEST.to_string()
        } else {
            media_type
        };
        self.put_manifest(repo, tag, &media_type, &bytes);
    }

    /// Deletes a tag's manifest (distribution deletes by digest: every tag on it goes).
    pub fn delete_manifest(&self, repo: &str, digest: &str) {
        http::ok(
            "DELETE",
            &format!("{}/v2/{repo}/manifests/{digest}", self.base()),
            &self.headers(&[]),
            None,
        );
    }

    /// The registry's tags for `repo`.
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let r = http::request(
            "GET",
            &format!("{}/v2/{repo}/tags/list", self.base()),
            &self.headers(&[]),
            None,
        );
        if r.status != 200 {
            return vec![];
        }
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("tags json");
        v["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| is_executable(p))
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Reads lines from a child's stdout until one starts with `prefix`.
pub(crate) fn wait_for_line(out: impl std::io::Read, prefix: &str) -> Result<String, String> {
    let mut lines = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(rest) = line.strip_prefix(prefix) {
            return Ok(rest.trim().to_string());
        }
        lines.push(line);
    }
    Err(lines.join("\n"))
}
