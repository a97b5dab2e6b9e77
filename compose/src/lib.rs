//! Compose files, loaded as compose-go loads them, into one spanned tree.
//!
//! Why: the sandbox must refuse a bad compose file with an error a human can act on
//! (`file:line:col: path.to.key: message`), and every later stage (interpolation,
//! merge, typing) needs to know where each value came from. So YAML (via
//! `serde-saphyr`) and TOML (via `toml`) both load into the same perry-owned
//! [`Node`] tree that keeps tags (`!reset`, `!override`) and spans.
//!
//! ```
//! let node = perry_compose::parse_yaml("compose.yaml", "services:\n  web:\n    image: nginx\n").unwrap();
//! let web = node.get("services").and_then(|s| s.get("web")).unwrap();
//! assert_eq!(web.span.line, 3);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod interpolate;
mod node;
mod toml_load;
mod yaml;

pub use error::ParseError;
pub use interpolate::{substitute, InterpolateError};
pub use node::{Node, Span, Value};
pub use toml_load::parse_toml;
pub use yaml::{parse_yaml, MAX_FILE_BYTES};
