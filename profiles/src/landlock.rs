//! Landlock rules for `hardened` and `untrusted`.
//!
//! Landlock is the second wall behind the read-only mount: even if a mount were writable by
//! mistake, or a path was bind-mounted in, the kernel still refuses writes outside the granted
//! paths, and TCP `bind`/`connect` outside the granted ports. The rules here are plain data; the
//! runtime (`perry_runtime::native::ProfileStep`) turns them into a ruleset for the kernel's ABI.

use std::path::PathBuf;

use serde::Serialize;

/// What one path rule grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathAccess {
    /// Read files, list directories, execute.
    ReadExecute,
    /// Everything, including create, remove, rename and truncate.
    ReadWrite,
    /// Write to an existing file only (for `/dev/null`: shells redirect to it).
    WriteFile,
}

/// One path and what may be done beneath it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathRule {
    /// The path (inside the sandbox's root).
    pub path: PathBuf,
    /// The access granted beneath it.
    pub access: PathAccess,
}

/// The Landlock rules of a profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LandlockRules {
    /// Path rules; every filesystem access not granted here is denied.
    pub paths: Vec<PathRule>,
    /// TCP ports the workload may connect to (empty: none).
    pub tcp_connect: Vec<u16>,
    /// TCP ports the workload may bind (empty: none).
    pub tcp_bind: Vec<u16>,
    /// Also scope abstract UNIX sockets and signals to the sandbox (Landlock ABI 6).
    pub scope_ipc: bool,
    /// Running must fail unless every requested restriction is enforced by the kernel.
    pub required: bool,
}

/// Paths a program expects to be able to write even in a read-only sandbox.
const DEV_WRITABLE: [&str; 3] = ["/dev/null", "/dev/zero", "/dev/full"];

impl LandlockRules {
    /// Read-only everywhere except `/tmp` and `writable`; extra `readable` paths; the given ports.
    pub fn read_only_except(
        writable: &[PathBuf],
        readable: &[PathBuf],
        tcp_connect: &[u16],
        tcp_bind: &[u16],
        required: bool,
    ) -> Self {
        let mut paths = vec![PathRule {
            path: "/".into(),
            access: PathAccess::ReadExecute,
        }];
        paths.extend(readable.iter().map(|p| PathRule {
            path: p.clone(),
            access: PathAccess::ReadExecute,
        }));
        paths.extend(DEV_WRITABLE.iter().map(|p| PathRule {
            path: p.into(),
            access: PathAccess::WriteFile,
        }));
        paths.push(PathRule {
            path: "/tmp".into(),
            access: PathAccess::ReadWrite,
        });
        paths.extend(writable.iter().map(|p| PathRule {
            path: p.clone(),
            access: PathAccess::ReadWrite,
        }));
        LandlockRules {
            paths,
            tcp_connect: tcp_connect.to_vec(),
            tcp_bind: tcp_bind.to_vec(),
            scope_ipc: true,
            required,
        }
    }

    /// Paths granted write access.
    pub fn writable(&self) -> impl Iterator<Item = &PathBuf> {
        self.paths
            .iter()
            .filter(|r| r.access == PathAccess::ReadWrite)
            .map(|r| &r.path)
    }
}
