//! A tiny blocking HTTP helper over `ureq` (plain HTTP to loopback only).

use std::io::Read;
use std::time::Duration;

/// A response: status, `Content-Type`, headers we need, body.
pub(crate) struct Response {
    pub status: u16,
    pub content_type: Option<String>,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .redirects(0)
        .build()
}

/// Sends a request; non-2xx statuses are returned, not errors. Panics on transport failure.
pub(crate) fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    try_request(method, url, headers, body).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`request`], but a transport failure is an `Err` (used while waiting for a server).
pub(crate) fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, String> {
    assert!(
        url.starts_with("http://127.") || url.starts_with("http://localhost"),
        "testworld only talks to loopback, not {url}"
    );
    let mut req = agent().request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("{method} {url}: {e}")),
    };
    let status = resp.status();
    let content_type = resp.header("content-type").map(str::to_string);
    let location = resp.header("location").map(str::to_string);
    let mut body = Vec::new();
    resp.into_reader()
        .take(256 * 1024 * 1024)
        .read_to_end(&mut body)
        .map_err(|e| format!("{method} {url}: reading body: {e}"))?;
    Ok(Response {
        status,
        content_type,
        location,
        body,
    })
}

/// Sends a request and panics unless the status is 2xx.
pub(crate) fn ok(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let r = request(method, url, headers, body);
    assert!(
        (200..300).contains(&r.status),
        "{method} {url}: HTTP {}: {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    r
}
