//! [`Client`]: what a host program links to call `perry-sandbox serve`.

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use perry_policies::Code;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::capability::{CapabilityOutcome, CapabilityRequest, CapabilitySummary};
use crate::error::ApiError;

/// A client of the local API on one Unix socket. Cheap to clone; each call opens its own
/// connection, so one client may be used from many tasks at once.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(Code::ServiceUnavailable, format!("{what}: {e}"))
}

impl Client {
    /// A client for the service listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// Sends one request; returns the status and body bytes.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let where_ = format!("{}", self.socket.display());
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| unavailable(&where_, e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unavailable(&where_, e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "perry-sandbox");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ApiError::new(Code::InvalidRequest, e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unavailable(&where_, e))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unavailable(&where_, e))?
            .to_bytes();
        Ok((status, bytes))
    }

    /// A JSON call: the decoded body on 2xx, the service's error otherwise.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ApiError> {
        let (status, bytes) = self.raw(method, path, body).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::new(
                    Code::Internal,
                    format!("unreadable answer from the service: {e}"),
                )
            });
        }
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            error: ApiError,
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => b.error,
            Err(_) => ApiError::new(Code::Internal, String::from_utf8_lossy(&bytes).into_owned()),
        })
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<serde_json::Value, ApiError> {
        self.call(Method::GET, "/v1/health", None).await
    }

    /// `GET /v1/capabilities`.
    pub async fn capabilities(&self) -> Result<Vec<CapabilitySummary>, ApiError> {
        #[derive(serde::Deserialize)]
        struct List {
            capabilities: Vec<CapabilitySummary>,
        }
        let l: List = self.call(Method::GET, "/v1/capabilities", None).await?;
        Ok(l.capabilities)
    }

    /// `POST /v1/capabilities/{name}/invoke`.
    pub async fn invoke(
        &self,
        name: &str,
        req: &CapabilityRequest,
    ) -> Result<CapabilityOutcome, ApiError> {
        let body = serde_json::to_vec(req)
            .map_err(|e| ApiError::new(Code::InvalidRequest, e.to_string()))?;
        let path = format!("/v1/capabilities/{}/invoke", encode_segment(name));
        self.call(Method::POST, &path, Some(body)).await
    }

    /// `POST /v1/verify`: the verifier's decision on `image` (the pinned digest and signer).
    pub async fn verify(&self, image: &str) -> Result<serde_json::Value, ApiError> {
        let body = serde_json::to_vec(&serde_json::json!({ "image": image }))
            .map_err(|e| ApiError::new(Code::InvalidRequest, e.to_string()))?;
        self.call(Method::POST, "/v1/verify", Some(body)).await
    }

    /// `GET /metrics` (Prometheus text).
    pub async fn metrics(&self) -> Result<String, ApiError> {
        let (status, bytes) = self.raw(Method::GET, "/metrics", None).await?;
        if !status.is_success() {
            return Err(ApiError::new(Code::Internal, "metrics refused"));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Percent-encodes a path segment (capability names are free-form TOML keys).
fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_encoded() {
        assert_eq!(super::encode_segment("git-log"), "git-log");
        assert_eq!(super::encode_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(super::encode_segment("../x"), "..%2Fx");
    }
}
