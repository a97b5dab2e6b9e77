//! Finding compose files and naming projects, like the compose CLI.

use std::path::{Path, PathBuf};

use crate::LoadError;

/// The file names looked for, in order of preference.
pub const DEFAULT_FILES: [&str; 5] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
    "compose.toml",
];

/// Override files picked up next to the main file.
pub const OVERRIDE_FILES: [&str; 5] = [
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yaml",
    "docker-compose.override.yml",
    "compose.override.toml",
];

/// Finds the compose files for `dir` like `docker compose` without `-f`: the first
/// directory among `dir` and its parents holding one of [`DEFAULT_FILES`] wins; the
/// first candidate found there is the main file, followed by the first of
/// [`OVERRIDE_FILES`] in the same directory, if any.
///
/// `COMPOSE_FILE` is not read here: [`crate::load`] reads it from
/// `LoadOptions::environment` when `LoadOptions::files` is empty (`:`-separated, or
/// `COMPOSE_PATH_SEPARATOR`), and only falls back to this search without it.
pub fn find_compose_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if let Some(main) = DEFAULT_FILES
            .iter()
            .map(|f| d.join(f))
            .find(|p| p.is_file())
        {
            let mut out = vec![main];
            if let Some(o) = OVERRIDE_FILES
                .iter()
                .map(|f| d.join(f))
                .find(|p| p.is_file())
            {
                out.push(o);
            }
            return Ok(out);
        }
        cur = d.parent();
    }
    Err(LoadError::NotFound(dir.to_path_buf()))
}

/// Normalises a project name like compose: lowercase, characters other than
/// `[a-z0-9_-]` dropped, leading `_`/`-` trimmed (`My App!` is `myapp`).
pub fn normalize_project_name(name: &str) -> String {
    let lower = name.to_lowercase();
    let kept: String = lower
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    kept.trim_start_matches(['_', '-']).to_string()
}

/// Whether `name` is already a valid project name (what `-p` must be).
pub(crate) fn is_valid_project_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_lowercase() || f.is_ascii_digit())
        && c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(normalize_project_name("My App!"), "myapp");
        assert_eq!(normalize_project_name("_x-Y.z"), "x-yz");
        assert!(is_valid_project_name("a_b-1"));
        assert!(!is_valid_project_name("-a"));
        assert!(!is_valid_project_name("A"));
    }
}
