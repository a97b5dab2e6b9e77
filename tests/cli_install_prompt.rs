//! The backend installer, through a real pseudo-terminal: when no backend is found, a person at
//! the terminal gets the platform's backends to choose from (arrow keys or a number), sees the
//! exact command, and it runs only after an explicit yes; then detection runs again and the
//! command carries on. No terminal, `PERRY_NO_INSTALL_PROMPT=1` or a decline: no install, exit
//! 125 `no_backend_found`.
//!
//! The "install" commands are the site's own (`[backends.<name>] install`): one links the real
//! podman where `[backends.podman] program` points, so the redetection finds a real backend.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};

/// A site with no usable backend: docker and podman both named at paths that do not exist
/// yet; each one's install command records that it ran, and podman's links the real podman.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        Site::with_podman_install(
            "echo installing podman now; echo podman >> {d}/installed; ln -s /usr/bin/podman {bin}/podman",
        )
    }

    /// A site whose podman install command is `script` (`{d}`: the site's directory, `{bin}`:
    /// where `[backends.podman] program` points).
    fn with_podman_install(script: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("bin")).unwrap();
        let config = format!(
            "[backends]\norder = [\"docker\", \"podman\"]\n\n\
             [backends.docker]\nprogram = \"{bin}/docker\"\n\
             install = [\"/bin/sh\", \"-c\", \"echo docker >> {d}/installed\"]\n\n\
             [backends.podman]\nprogram = \"{bin}/podman\"\n\
             install = [\"/bin/sh\", \"-c\", \"{script}\"]\n",
            script = script
                .replace("{d}", &d.display().to_string())
                .replace("{bin}", &d.join("bin").display().to_string()),
            bin = d.join("bin").display(),
            d = d.display()
        );
        std::fs::write(d.join("perryconfig.toml"), config).unwrap();
        Site { dir }
    }

    fn command(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(env!("CARGO_BIN_EXE_perry-sandbox"));
        c.arg("--config")
            .arg(d.join("perryconfig.toml"))
            .arg("--state-dir")
            .arg(d.join("state"))
            .args(["compose", "-p", "installprompt", "ps"])
            .env_remove("PERRY_CONTAINER_BACKEND")
            .env_remove("PERRY_NO_INSTALL_PROMPT")
            .env_remove("PERRY_CONFIG");
        c
    }

    fn installed(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("installed")).unwrap_or_default()
    }
}

/// A child on a pseudo-terminal, its output collected as it comes.
struct OnPty {
    child: Child,
    master: File,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl OnPty {
    fn spawn(mut cmd: Command) -> OnPty {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave_path = PathBuf::from(name.to_str().unwrap());
        let slave = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&slave_path)
                .unwrap()
        };
        cmd.stdin(Stdio::from(slave()))
            .stdout(Stdio::from(slave()))
            .stderr(Stdio::from(slave()));
        let child = cmd.spawn().unwrap();
        drop(cmd); // our copies of the slave: the master sees EOF when the child is done
        let master = File::from(master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnPty {
            child,
            master,
            seen,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Waits until the output shows `needle` (10 s).
    fn expect(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on the terminal; it shows:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
        self.master.flush().unwrap();
    }

    /// The exit code (30 s), then a moment for the last output to be read.
    fn exit(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "still running:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn menu_shown(t: &OnPty) {
    t.expect("Install a container backend?");
    t.expect("2. podman");
}

#[test]
fn arrow_down_enter_and_yes_install_the_second_choice_then_the_command_carries_on() {
    let site = Site::new();
    let mut t = OnPty::spawn(site.command());
    menu_shown(&t);
    let shown = t.text();
    assert!(shown.contains("no container backend found"), "{shown}");
    assert!(shown.contains("https://"), "the docs link: {shown}");
    t.send(b"\x1b[B");
    t.expect("> 2. podman");
    t.send(b"\r");
    t.expect("[y/N]");
    assert!(
        t.text().contains("echo installing podman now"),
        "the exact command is shown"
    );
    assert_eq!(site.installed(), "", "ran before the yes");
    t.send(b"y\r");
    t.expect("installing podman now");
    let code = t.exit();
    assert_eq!(code, 0, "{}", t.text());
    assert_eq!(site.installed(), "podman\n", "only the chosen one ran");
    assert!(site.dir.path().join("bin/podman").exists());
}

#[test]
fn a_number_picks_directly_and_anything_but_yes_installs_nothing() {
    let site = Site::new();
    let mut t = OnPty::spawn(site.command());
    menu_shown(&t);
    t.send(b"2");
    t.expect("[y/N]");
    t.send(b"\r"); // the default is no
    assert_eq!(t.exit(), 125, "{}", t.text());
    assert!(t.text().contains("no_backend_found"), "{}", t.text());
    assert_eq!(site.installed(), "");
}

#[test]
fn q_cancels_the_menu() {
    let site = Site::new();
    let mut t = OnPty::spawn(site.command());
    menu_shown(&t);
    t.send(b"q");
    assert_eq!(t.exit(), 125, "{}", t.text());
    assert!(t.text().contains("cancelled"), "{}", t.text());
    assert_eq!(site.installed(), "");
}

#[test]
fn without_a_terminal_or_with_the_opt_out_there_is_no_prompt() {
    let site = Site::new();
    // Pipes, not a terminal.
    let mut c = site.command();
    c.stdin(Stdio::null());
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_backend_found"), "{err}");
    // The first choice with a command is recommended: docker's, first in the order.
    assert!(
        err.contains("echo docker >>"),
        "the recommended command: {err}"
    );
    assert!(!err.contains("Install a container backend?"), "{err}");

    // On a terminal, but PERRY_NO_INSTALL_PROMPT=1.
    let mut c = site.command();
    c.env("PERRY_NO_INSTALL_PROMPT", "1");
    let mut t = OnPty::spawn(c);
    assert_eq!(t.exit(), 125, "{}", t.text());
    assert!(t.text().contains("no_backend_found"), "{}", t.text());
    assert!(
        !t.text().contains("Install a container backend?"),
        "{}",
        t.text()
    );
    assert_eq!(site.installed(), "");
}

#[test]
fn a_failed_install_is_a_clear_no_backend_found() {
    let site = Site::with_podman_install(
        "echo podman >> {d}/installed; echo mirror unreachable >&2; exit 3",
    );
    let mut t = OnPty::spawn(site.command());
    menu_shown(&t);
    t.send(b"2");
    t.expect("[y/N]");
    t.send(b"y\r");
    assert_eq!(t.exit(), 125, "{}", t.text());
    let text = t.text();
    assert_eq!(site.installed(), "podman\n", "the command ran");
    assert!(
        text.contains("mirror unreachable"),
        "its output streamed: {text}"
    );
    assert!(
        text.contains("error[no_backend_found]") && text.contains("failed (exit status: 3)"),
        "{text}"
    );
    assert!(
        !site.dir.path().join("bin/podman").exists(),
        "nothing was installed"
    );
}

#[test]
fn a_dumb_terminal_gets_the_numbered_menu() {
    let site = Site::new();
    let mut c = site.command();
    c.env("TERM", "dumb");
    let mut t = OnPty::spawn(c);
    menu_shown(&t);
    t.expect("number (empty to cancel): ");
    // No selection marker and no cursor movement: plain numbered lines.
    assert!(!t.text().contains("> 1."), "{}", t.text());
    t.send(b"2\r");
    t.expect("[y/N]");
    assert!(
        t.text().contains("echo installing podman now"),
        "{}",
        t.text()
    );
    t.send(b"n\r");
    assert_eq!(t.exit(), 125, "{}", t.text());
    assert!(t.text().contains("no_backend_found"), "{}", t.text());
    assert_eq!(site.installed(), "");

    // An out-of-range number cancels.
    let mut c = site.command();
    c.env("TERM", "dumb");
    let mut t = OnPty::spawn(c);
    t.expect("number (empty to cancel): ");
    t.send(b"9\r");
    assert_eq!(t.exit(), 125, "{}", t.text());
    assert!(t.text().contains("cancelled"), "{}", t.text());
}
