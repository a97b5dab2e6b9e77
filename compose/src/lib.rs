//! Compose files, loaded as compose-go loads them, into a typed [`Project`].
//!
//! Why: the sandbox must refuse a bad compose file with an error a human can act on
//! (`file:line:col: path.to.key: message`), and every later stage (interpolation,
//! merge, typing) needs to know where each value came from. So YAML (via
//! `serde-saphyr`) and TOML (via `toml`) both load into the same perry-owned
//! [`Node`] tree that keeps tags (`!reset`, `!override`) and spans, and the loader
//! runs compose-go's pipeline on that tree before typing it:
//! `!reset`/`!override` → interpolation → compose-spec JSON Schema validation
//! ([`validate_schema`]) → `include` → `extends` → multi-file merge → paths and
//! `env_file` → normalisation → typing → profiles → consistency checks.
//! [`to_yaml`] and [`to_json`] print the result as `docker compose config` does.
//!
//! ```
//! let node = perry_compose::parse_yaml("compose.yaml", "services:\n  web:\n    image: nginx\n").unwrap();
//! let web = node.get("services").and_then(|s| s.get("web")).unwrap();
//! assert_eq!(web.span.line, 3);
//! ```
//!
//! ```no_run
//! use perry_compose::{load, LoadOptions};
//! let project = load(&LoadOptions {
//!     files: vec!["compose.yaml".into()],
//!     environment: std::env::vars().collect(),
//!     ..LoadOptions::default()
//! })?;
//! println!("{}", serde_json::to_string_pretty(&project).unwrap());
//! # Ok::<(), perry_compose::LoadError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod dotenv;
mod emit;
mod error;
mod extends;
mod files;
mod interpolate;
mod load;
mod merge;
mod model;
mod node;
mod node_de;
mod normalize;
mod paths;
mod schema;
mod toml_load;
mod transform;
mod units;
mod yaml;

pub use dotenv::{parse_dotenv, parse_dotenv_with_lookup};
pub use emit::{to_json, to_yaml};
pub use error::{LoadError, ParseError};
pub use files::{find_compose_files, normalize_project_name, DEFAULT_FILES, OVERRIDE_FILES};
pub use interpolate::{extract_variables, substitute, InterpolateError, Variable};
pub use load::{load, LoadOptions};
pub use model::{
    Build, Condition, Config, DependsOn, Deploy, Device, EnvFile, Extends, Extensions, FileObject,
    HealthTest, Healthcheck, Ipam, IpamPool, Logging, Network, Placement, PlacementPreference,
    Project, Resource, Resources, RestartPolicy, Secret, Service, ServiceConfigRef, ServiceHook,
    ServiceNetwork, ServicePort, ServiceVolume, Ulimit, UpdateConfig, Volume, VolumeBind,
    VolumeImage, VolumeKind, VolumeTmpfs, VolumeVolume,
};
pub use node::{Node, Span, Value, REDACTED};
pub use schema::{validate_schema, SchemaError, COMPOSE_SPEC_SCHEMA};
pub use toml_load::parse_toml;
pub use units::{format_duration, parse_bytes, parse_duration, ByteSize, FileMode};
pub use yaml::{parse_yaml, MAX_DEPTH, MAX_FILE_BYTES};
