//! The rollback journal: every resource an `up` is about to create is written down (durably,
//! atomically) before it is created, so that a failure — or a `kill -9` of the process — can
//! always be undone in reverse order, and nothing this `up` made is left behind.
//!
//! One journal per project under `<state_dir>/journal/<project>.json`. A journal that exists
//! when a command starts belongs to an `up` that did not finish: the next `up` or `down` rolls
//! it back first ([`Journal::pending`]). A finished `up` removes its journal: what runs is then
//! found by label, like compose.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What kind of resource an entry is (removed in reverse creation order, whatever the kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// A container.
    Container,
    /// A network.
    Network,
    /// A named volume.
    Volume,
}

/// One resource the `up` was about to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// Its kind.
    pub kind: ResourceKind,
    /// Its name at the backend.
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    version: u32,
    project: String,
    run_id: String,
    resources: Vec<Resource>,
}

/// Why the journal cannot be read or written: nothing may be created without it.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The project name cannot be a file name.
    #[error("project name `{0}` is not a valid journal name (only a-z, 0-9, `_` and `-`)")]
    BadProject(String),
    /// Reading, writing or removing the journal failed.
    #[error("rollback journal {path}: {reason}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The journal does not parse (it is only ever written whole, by rename).
    #[error("rollback journal {path}: unreadable ({reason}); remove the project's resources by label, then the file")]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The journal of one `up` of one project.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    doc: Doc,
}

impl Journal {
    /// Starts the journal of a new `up` (run id `run_id`). Call [`Journal::pending`] first:
    /// this replaces whatever journal was there.
    pub fn begin(state_dir: &Path, project: &str, run_id: &str) -> Result<Self, JournalError> {
        let path = path_for(state_dir, project)?;
        let j = Self {
            path,
            doc: Doc {
                version: 1,
                project: project.to_string(),
                run_id: run_id.to_string(),
                resources: Vec::new(),
            },
        };
        j.write()?;
        Ok(j)
    }

    /// The journal an earlier `up` of `project` left unfinished, if any.
    pub fn pending(state_dir: &Path, project: &str) -> Result<Option<Self>, JournalError> {
        let path = path_for(state_dir, project)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, e)),
        };
        let doc: Doc = serde_json::from_slice(&bytes).map_err(|e| JournalError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if doc.project != project || doc.version != 1 {
            return Err(JournalError::Corrupt {
                path,
                reason: format!(
                    "written for project `{}`, version {}",
                    doc.project, doc.version
                ),
            });
        }
        Ok(Some(Self { path, doc }))
    }

    /// Records, durably, that `name` is about to be created. Returns only once the journal on
    /// disk names it: the caller creates the resource after this.
    pub fn intend(&mut self, kind: ResourceKind, name: &str) -> Result<(), JournalError> {
        self.doc.resources.push(Resource {
            kind,
            name: name.to_string(),
        });
        if let Err(e) = self.write() {
            self.doc.resources.pop();
            return Err(e);
        }
        Ok(())
    }

    /// The run id of the `up` that wrote it (the `io.perry-sandbox.run` label).
    pub fn run_id(&self) -> &str {
        &self.doc.run_id
    }

    /// What to remove to roll back, newest first.
    pub fn rollback_order(&self) -> impl Iterator<Item = &Resource> {
        self.doc.resources.iter().rev()
    }

    /// Removes the journal: the `up` finished, or its rollback did.
    pub fn finish(self) -> Result<(), JournalError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&self.path, e)),
        }
        if let Some(dir) = self.path.parent() {
            perry_audit::store::sync_dir(dir).map_err(|e| JournalError::Io {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }

    fn write(&self) -> Result<(), JournalError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let bytes = serde_json::to_vec_pretty(&self.doc).map_err(|e| JournalError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        perry_audit::store::write_atomic(&self.path, &bytes, 0o600).map_err(|e| JournalError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}

fn path_for(state_dir: &Path, project: &str) -> Result<PathBuf, JournalError> {
    let valid = !project.is_empty()
        && project
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        return Err(JournalError::BadProject(project.to_string()));
    }
    Ok(state_dir.join("journal").join(format!("{project}.json")))
}

fn io(path: &Path, e: std::io::Error) -> JournalError {
    JournalError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_up_is_found_by_the_next_command_with_its_resources_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::begin(dir.path(), "shop", "run-1").unwrap();
        j.intend(ResourceKind::Network, "shop_backend").unwrap();
        j.intend(ResourceKind::Volume, "shop_pgdata").unwrap();
        j.intend(ResourceKind::Container, "shop-db-1").unwrap();
        // The process dies here (no finish): the next command finds all three.
        drop(j);
        let p = Journal::pending(dir.path(), "shop")
            .unwrap()
            .expect("pending");
        assert_eq!(p.run_id(), "run-1");
        let names: Vec<&str> = p.rollback_order().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["shop-db-1", "shop_pgdata", "shop_backend"]);
        p.finish().unwrap();
        assert!(Journal::pending(dir.path(), "shop").unwrap().is_none());
        // Other projects are not affected.
        assert!(Journal::pending(dir.path(), "other").unwrap().is_none());
    }

    #[test]
    fn a_bad_project_name_or_a_damaged_journal_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Journal::begin(dir.path(), "../etc", "r"),
            Err(JournalError::BadProject(_))
        ));
        std::fs::create_dir_all(dir.path().join("journal")).unwrap();
        std::fs::write(dir.path().join("journal/shop.json"), b"{\"version\":1,").unwrap();
        let e = Journal::pending(dir.path(), "shop").unwrap_err();
        assert!(e.to_string().contains("journal/shop.json"), "{e}");
        assert!(matches!(e, JournalError::Corrupt { .. }));
    }

    #[test]
    fn the_journal_is_private_and_written_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::begin(dir.path(), "shop", "r").unwrap();
        j.intend(ResourceKind::Container, "shop-web-1").unwrap();
        let path = dir.path().join("journal/shop.json");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["resources"][0]["name"], "shop-web-1");
        assert_eq!(v["resources"][0]["kind"], "container");
    }
}
