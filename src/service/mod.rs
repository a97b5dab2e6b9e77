//! `perry-sandbox serve`: the local API a host program's ShellBridge calls.
//!
//! HTTP/1.1 + JSON over a Unix socket (mode 0660). Every connection's peer credentials
//! (`SO_PEERCRED`) are checked against `[service] allowed_uids` / `allowed_gids` before any
//! request is read; root is not implied. Endpoints:
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/v1/health` | | `{"ok":true,"version":…,"in_flight":…,"queued":…}` |
//! | GET | `/v1/capabilities` | | `{"ok":true,"capabilities":[{name,description,image,tier}]}` |
//! | POST | `/v1/capabilities/{name}/invoke` | `{args, workspace?, stdin?, timeout?, env?}` | the outcome (`ok`, `stdout`, `stderr`, `exit_code`, …) |
//! | POST | `/v1/verify` | `{image, platform?}` | `{"ok":true,"digest":…,"pinned":…,"signer":…}` |
//! | GET | `/metrics` | | Prometheus text |
//!
//! Errors are `{"ok":false,"error":{"code":…,"status":…,"message":…}}` with the HTTP status
//! of the same number. Request bodies are capped at `max_request_size` (413); at most
//! `max_concurrent` invocations run at once and `max_queue` wait (429 beyond that); a request
//! that cannot finish within `request_timeout` is answered 504 and its sandbox is bounded by the
//! same budget. SIGTERM stops accepting connections and drains the calls in flight.
//!
//! [`Client`] is the small Rust client host programs use.

mod client;
mod gate;
mod metrics;
mod server;

pub use client::Client;
pub use metrics::Metrics;
pub use server::{bind_socket, Server, ServerOptions};
