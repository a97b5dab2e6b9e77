//! When no container backend is found and a person is at the terminal: offer the platform's
//! backends (arrow keys, or a number), show the exact install command, run it only after an
//! explicit yes with its output streamed, then detect again and carry on.
//!
//! No terminal (stdin or stderr), `PERRY_NO_INSTALL_PROMPT=1`, a decline or a failed install:
//! no prompt (or no more of it), and the caller exits `no_backend_found` with what was probed
//! and the recommended command. `serve` never comes here: only commands a person runs do.

use std::io::{self, IsTerminal, Read, Write};
use std::process::Command;

use perry_sandbox::backends::InstallChoice;

/// Whether to ask at all.
pub(super) fn allowed() -> bool {
    std::env::var("PERRY_NO_INSTALL_PROMPT").as_deref() != Ok("1")
        && io::stdin().is_terminal()
        && io::stderr().is_terminal()
}

/// What the person decided.
pub(super) enum Decision {
    /// Run this choice's command (they said yes).
    Install(usize),
    /// They declined, or picked a backend that has to be installed by hand.
    Declined,
}

/// The menu, then the confirmation. The menu reads keys in raw mode when the terminal allows
/// it (↑/↓, a digit, Enter, q/Esc), and a numbered line otherwise: when raw mode cannot be
/// set, or `TERM=dumb` (a terminal that cannot move the cursor to redraw the menu).
pub(super) fn ask(why: &str, choices: &[InstallChoice]) -> io::Result<Decision> {
    let mut err = io::stderr();
    writeln!(err, "{why}\n")?;
    writeln!(
        err,
        "Install a container backend? (↑/↓ or a number, Enter to choose, q to cancel)"
    )?;
    let dumb = std::env::var("TERM").as_deref() == Ok("dumb");
    let raw = if dumb { None } else { raw_mode::Guard::enter() };
    let picked = match raw {
        Some(guard) => {
            let r = menu_with_keys(choices);
            drop(guard);
            r?
        }
        None => menu_with_numbers(choices)?,
    };
    let Some(i) = picked else {
        writeln!(err, "cancelled")?;
        return Ok(Decision::Declined);
    };
    let c = &choices[i];
    let Some(line) = c.command_line() else {
        writeln!(
            err,
            "{} has no install command here; see {}",
            c.backend, c.docs
        )?;
        return Ok(Decision::Declined);
    };
    write!(err, "Run `{line}` now? [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    io::stdin().read_line(&mut answer)?;
    Ok(match answer.trim() {
        "y" | "Y" | "yes" | "YES" | "Yes" => Decision::Install(i),
        _ => Decision::Declined,
    })
}

/// Runs the chosen command as argv with the terminal's stdio (its output streams as it comes);
/// `Err` says why it did not succeed.
pub(super) fn install(c: &InstallChoice) -> Result<(), String> {
    let (program, args) = c
        .command
        .split_first()
        .ok_or_else(|| format!("{} has no install command", c.backend))?;
    eprintln!("==> {}", c.command.join(" "));
    match Command::new(program).args(args).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`{}` failed ({s})", c.command.join(" "))),
        Err(e) => Err(format!("`{program}` could not run: {e}")),
    }
}

fn line(c: &InstallChoice, i: usize, selected: bool) -> String {
    let how = c
        .command_line()
        .map(|l| format!("`{l}`"))
        .unwrap_or_else(|| "install by hand".into());
    format!(
        "{} {}. {:<16} {} — {how}  ({})",
        if selected { ">" } else { " " },
        i + 1,
        c.backend,
        c.description,
        c.docs
    )
}

fn draw(choices: &[InstallChoice], selected: usize, redraw: bool) -> io::Result<()> {
    let mut err = io::stderr();
    if redraw {
        // Back to the first line of the menu, clear to the end of the screen.
        write!(err, "\x1b[{}F\x1b[J", choices.len())?;
    }
    for (i, c) in choices.iter().enumerate() {
        // Raw mode: the terminal does not turn \n into \r\n.
        write!(err, "{}\r\n", line(c, i, i == selected))?;
    }
    err.flush()
}

fn menu_with_keys(choices: &[InstallChoice]) -> io::Result<Option<usize>> {
    let mut selected = 0;
    draw(choices, selected, false)?;
    let mut stdin = io::stdin().lock();
    let mut buf = [0u8; 8];
    loop {
        let n = stdin.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        match &buf[..n] {
            b"\x1b[A" | b"\x1bOA" | b"k" => selected = selected.saturating_sub(1),
            b"\x1b[B" | b"\x1bOB" | b"j" => selected = (selected + 1).min(choices.len() - 1),
            b"\r" | b"\n" => return Ok(Some(selected)),
            b"q" | b"\x1b" | b"\x03" | b"\x04" => return Ok(None),
            [d @ b'1'..=b'9'] if usize::from(d - b'0') <= choices.len() => {
                return Ok(Some(usize::from(d - b'1')))
            }
            _ => continue,
        }
        draw(choices, selected, true)?;
    }
}

fn menu_with_numbers(choices: &[InstallChoice]) -> io::Result<Option<usize>> {
    let mut err = io::stderr();
    for (i, c) in choices.iter().enumerate() {
        writeln!(err, "{}", line(c, i, false))?;
    }
    write!(err, "number (empty to cancel): ")?;
    err.flush()?;
    let mut answer = String::new();
    io::stdin().read_line(&mut answer)?;
    Ok(answer
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=choices.len()).contains(n))
        .map(|n| n - 1))
}

mod raw_mode {
    //! The terminal in raw mode for the menu, restored when the guard drops.

    use std::io;
    use std::os::fd::AsFd;

    use rustix::termios::{tcgetattr, tcsetattr, OptionalActions, Termios};

    /// Restores the saved terminal settings on drop.
    pub(super) struct Guard {
        saved: Termios,
    }

    impl Guard {
        /// Raw mode on stdin, or `None` when the terminal does not allow it (then the menu
        /// falls back to a numbered line).
        pub(super) fn enter() -> Option<Guard> {
            let stdin = io::stdin();
            let saved = tcgetattr(stdin.as_fd()).ok()?;
            let mut raw = saved.clone();
            raw.make_raw();
            tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw).ok()?;
            Some(Guard { saved })
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = tcsetattr(io::stdin().as_fd(), OptionalActions::Now, &self.saved);
        }
    }
}
