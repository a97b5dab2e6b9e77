//! Attached output, as compose prints it: every followed container's lines as they come,
//! prefixed `service-N |` (one colour per container on a terminal), until every container has
//! exited, one has and `--abort-on-container-exit` says to stop, or Ctrl-C.

use std::io::{IsTerminal, Write};

use perry_sandbox::compose::{
    ContainerBackend, Followed, LogLine, LogStream, OrchestrateError, Orchestrator,
};
use tokio::sync::mpsc;

/// How to print and when to stop.
pub(super) struct AttachOptions {
    /// Stop following when the first container exits.
    pub abort_on_exit: bool,
    /// Colour the prefixes (a terminal, no `NO_COLOR`, no `--no-color`).
    pub color: bool,
    /// One JSON object per line on stdout instead of prefixed text.
    pub json: bool,
    /// Container stderr to our stderr (`logs`); attached `up` puts both on stdout, like compose.
    pub split_streams: bool,
}

impl AttachOptions {
    /// Whether prefixes get colours: stdout is a terminal, `NO_COLOR` is unset, and the
    /// caller did not say `--no-color`.
    pub(super) fn color_allowed(no_color: bool) -> bool {
        !no_color
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::io::stdout().is_terminal()
    }
}

/// Why following stopped.
pub(super) enum Ended {
    /// Every followed container exited.
    AllExited,
    /// This container exited first, with this code (`abort_on_exit`).
    Exited {
        /// Its service.
        service: String,
        /// Its exit code.
        code: i32,
    },
    /// Ctrl-C.
    Interrupted,
}

enum Event {
    Line(usize, LogLine),
    End(usize),
}

/// compose's palette: cyan, yellow, green, magenta, blue, then the bright ones.
const COLORS: [u8; 10] = [36, 33, 32, 35, 34, 96, 93, 92, 95, 94];

/// Follows `followed` until it [`Ended`].
pub(super) async fn attach<B: ContainerBackend>(
    orch: &Orchestrator<'_, B>,
    followed: Vec<Followed>,
    opts: &AttachOptions,
) -> Result<Ended, OrchestrateError> {
    if followed.is_empty() {
        return Ok(Ended::AllExited);
    }
    let names: Vec<String> = followed
        .iter()
        .map(|f| format!("{}-{}", f.service, f.replica))
        .collect();
    let width = names.iter().map(String::len).max().unwrap_or(0);
    let (tx, mut rx) = mpsc::channel(1024);
    let mut ids = Vec::new();
    let mut services = Vec::new();
    for (i, mut f) in followed.into_iter().enumerate() {
        ids.push(f.id.clone());
        services.push(f.service.clone());
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(line) = f.follower.next_line().await {
                if tx.send(Event::Line(i, line)).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::End(i)).await;
        });
    }
    drop(tx);
    let mut running = ids.len();
    // One listener for the whole attach, so a Ctrl-C between two lines is not missed.
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = &mut ctrl_c => return Ok(Ended::Interrupted),
        };
        match ev {
            Some(Event::Line(i, line)) => print_line(&names[i], width, i, &line, opts),
            Some(Event::End(i)) => {
                let code = orch.exit_code(&ids[i]).await?;
                if !opts.json {
                    println!("{} exited with code {code}", names[i]);
                }
                if opts.abort_on_exit {
                    return Ok(Ended::Exited {
                        service: services[i].clone(),
                        code,
                    });
                }
                running -= 1;
                if running == 0 {
                    return Ok(Ended::AllExited);
                }
            }
            None => return Ok(Ended::AllExited),
        }
    }
}

fn print_line(name: &str, width: usize, i: usize, line: &LogLine, opts: &AttachOptions) {
    let stream = match line.stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
    };
    if opts.json {
        let v = serde_json::json!({
            "event": {"status": "log", "container": name, "stream": stream, "line": line.text}
        });
        let _ = writeln!(std::io::stdout(), "{v}");
        return;
    }
    let prefix = if opts.color {
        format!("\x1b[{}m{name:<width$} |\x1b[0m", COLORS[i % COLORS.len()])
    } else {
        format!("{name:<width$} |")
    };
    if opts.split_streams && line.stream == LogStream::Stderr {
        let _ = writeln!(std::io::stderr(), "{prefix} {}", line.text);
    } else {
        let _ = writeln!(std::io::stdout(), "{prefix} {}", line.text);
    }
}
