//! What to install when no backend is found: the platform's backends in probe order, each with
//! a one-line description, the exact install command (argv, never a shell string) and where
//! its documentation is. The CLI offers these on a terminal and runs a command only after an
//! explicit yes; everywhere else the recommended one goes into the `no_backend_found` error.

use std::path::Path;

use perry_policies::BackendsConfig;
use serde::Serialize;

use crate::detect::probe_order;

/// One backend the user could install.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstallChoice {
    /// The backend's name (as `PERRY_CONTAINER_BACKEND` spells it).
    pub backend: String,
    /// One line: what it is.
    pub description: &'static str,
    /// The command that installs it, or empty when it has to be installed by hand.
    pub command: Vec<String>,
    /// Its installation documentation.
    pub docs: &'static str,
}

impl InstallChoice {
    /// The command as a user would type it (for display only; it is run as argv).
    pub fn command_line(&self) -> Option<String> {
        (!self.command.is_empty()).then(|| self.command.join(" "))
    }
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

/// The Linux package manager's install command for `packages`, or empty when none of the
/// known ones is on this machine.
fn linux_packages(packages: &[&str]) -> Vec<String> {
    let has = |p: &str| Path::new("/usr/bin").join(p).is_file();
    let mut v: Vec<&str> = if has("apt-get") {
        vec!["apt-get", "install", "-y"]
    } else if has("dnf") {
        vec!["dnf", "install", "-y"]
    } else if has("zypper") {
        vec!["zypper", "--non-interactive", "install"]
    } else if has("pacman") {
        vec!["pacman", "-S", "--noconfirm"]
    } else {
        return Vec::new();
    };
    v.extend(packages);
    argv(&v)
}

/// The choice for backend `name` on `os` (None for a backend not installed this way).
fn choice(name: &str, os: &str) -> Option<InstallChoice> {
    let mac = os == "macos";
    let (description, command, docs) = match name {
        "podman" if mac => (
            "daemonless containers in a podman machine VM",
            argv(&["brew", "install", "podman"]),
            "https://podman.io/docs/installation#macos",
        ),
        "podman" => (
            "daemonless, rootless-capable containers; runc as the OCI runtime",
            linux_packages(&["podman", "runc"]),
            "https://podman.io/docs/installation#installing-on-linux",
        ),
        "nerdctl" => (
            "containerd's docker-compatible CLI",
            Vec::new(),
            "https://github.com/containerd/nerdctl#install",
        ),
        "docker" if mac => (
            "Docker Desktop",
            argv(&["brew", "install", "--cask", "docker"]),
            "https://docs.docker.com/desktop/setup/install/mac-install/",
        ),
        "docker" => (
            "the Docker engine (a root daemon)",
            linux_packages(&["docker.io"]),
            "https://docs.docker.com/engine/install/",
        ),
        "orbstack" => (
            "a light Linux VM with a docker-compatible engine",
            argv(&["brew", "install", "--cask", "orbstack"]),
            "https://docs.orbstack.dev/install",
        ),
        "colima" => (
            "container runtimes in a lima VM, with the docker CLI",
            argv(&["brew", "install", "colima", "docker"]),
            "https://github.com/abiosoft/colima#installation",
        ),
        "rancher-desktop" => (
            "Rancher Desktop: containerd or moby in a VM",
            argv(&["brew", "install", "--cask", "rancher"]),
            "https://docs.rancherdesktop.io/getting-started/installation/",
        ),
        "lima" => (
            "Linux VMs running nerdctl",
            argv(&["brew", "install", "lima"]),
            "https://lima-vm.io/docs/installation/",
        ),
        // Never picked (crate::apple): offering it would install something we cannot use.
        _ => return None,
    };
    Some(InstallChoice {
        backend: name.into(),
        description,
        command,
        docs,
    })
}

/// The backends to offer on `os`, in probe order (or `[backends] order`), each with its
/// install command — `[backends.<name>] install` when the site set one (a local mirror, a
/// package of its own), else the platform's.
pub fn install_choices(os: &str, config: &BackendsConfig) -> Vec<InstallChoice> {
    let order: Vec<String> = match &config.order {
        Some(o) => o.clone(),
        None => probe_order(os).iter().map(|s| s.to_string()).collect(),
    };
    order
        .iter()
        .filter_map(|n| {
            let mut c = choice(n, os)?;
            let site = config.settings(n).install;
            if !site.is_empty() {
                c.command = site;
            }
            Some(c)
        })
        .collect()
}

/// The first choice that has a command: what the error recommends.
pub fn recommended(choices: &[InstallChoice]) -> Option<&InstallChoice> {
    choices.iter().find(|c| !c.command.is_empty())
}

/// What the `no_backend_found` error says to do: the recommended command and its docs.
pub fn install_advice(os: &str, config: &BackendsConfig) -> String {
    match recommended(&install_choices(os, config)) {
        Some(c) => format!(
            "install one, e.g. {}: `{}` ({})",
            c.backend,
            c.command.join(" "),
            c.docs
        ),
        None => "install podman, docker or nerdctl (https://podman.io/docs/installation)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_follow_the_probe_order_and_never_offer_apple_container() {
        let mac = install_choices("macos", &BackendsConfig::default());
        let names: Vec<&str> = mac.iter().map(|c| c.backend.as_str()).collect();
        assert_eq!(
            names,
            [
                "orbstack",
                "colima",
                "rancher-desktop",
                "lima",
                "podman",
                "nerdctl",
                "docker"
            ]
        );
        assert_eq!(recommended(&mac).unwrap().command[0], "brew");
        let linux = install_choices("linux", &BackendsConfig::default());
        assert_eq!(linux[0].backend, "podman");
        // This Debian host: apt-get, podman with runc.
        assert_eq!(
            linux[0].command_line().as_deref(),
            Some("apt-get install -y podman runc")
        );
        assert!(linux[1].command.is_empty(), "nerdctl has no distro package");
        assert!(linux.iter().all(|c| c.docs.starts_with("https://")));
    }

    #[test]
    fn a_site_install_command_and_order_win() {
        let c: BackendsConfig = toml::from_str(
            "order = [\"docker\", \"podman\"]\n[podman]\ninstall = [\"/opt/site/install-podman\"]\n",
        )
        .unwrap();
        let v = install_choices("linux", &c);
        assert_eq!(v[0].backend, "docker");
        assert_eq!(v[1].command, ["/opt/site/install-podman"]);
    }
}
