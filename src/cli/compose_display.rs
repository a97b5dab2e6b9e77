//! Compose progress as people read it on a terminal: one line per network, volume, image and
//! container, redrawn in place as its state changes (`✔ Container shop-db-1  Healthy  1.2s`),
//! under a `[+] Running done/total` header, like docker compose. Off a terminal the same
//! events are plain lines; with `--json`, one JSON event per line on stdout.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use perry_sandbox::compose::Progress;

/// States after which nothing more is expected for a resource.
const DONE: [&str; 9] = [
    "started",
    "healthy",
    "unhealthy",
    "unchanged",
    "removed",
    "stopped",
    "created",
    "failed",
    "orphan",
];

struct Line {
    resource: String,
    kind: &'static str,
    status: &'static str,
    detail: Option<String>,
    since: Instant,
    took: Option<Duration>,
}

#[derive(Default)]
struct Screen {
    lines: Vec<Line>,
    drawn: usize,
}

impl Screen {
    fn update(&mut self, p: &Progress) {
        let done = DONE.contains(&p.status);
        let kind = match p.kind {
            "network" => "Network",
            "volume" => "Volume",
            "image" => "Image",
            _ => "Container",
        };
        match self.lines.iter_mut().find(|l| l.resource == p.resource) {
            Some(l) => {
                l.status = p.status;
                l.detail = p.detail.clone();
                l.took = done.then(|| l.since.elapsed());
            }
            None => self.lines.push(Line {
                resource: p.resource.clone(),
                kind,
                status: p.status,
                detail: p.detail.clone(),
                since: Instant::now(),
                took: done.then_some(Duration::ZERO),
            }),
        }
    }

    fn draw(&mut self) {
        let mut err = std::io::stderr().lock();
        if self.drawn > 0 {
            // Back to the header, clear everything below: the whole block is redrawn.
            let _ = write!(err, "\x1b[{}F\x1b[J", self.drawn);
        }
        let done = self.lines.iter().filter(|l| l.took.is_some()).count();
        let _ = writeln!(err, "[+] Running {done}/{}", self.lines.len());
        let width = self
            .lines
            .iter()
            .map(|l| l.kind.len() + 1 + l.resource.len())
            .max()
            .unwrap_or(0);
        for l in &self.lines {
            let (mark, secs) = match l.took {
                Some(t) => (
                    if matches!(l.status, "failed" | "unhealthy") {
                        "\x1b[31m✘\x1b[0m"
                    } else {
                        "\x1b[32m✔\x1b[0m"
                    },
                    t,
                ),
                None => ("\x1b[33m⠿\x1b[0m", l.since.elapsed()),
            };
            let name = format!("{} {}", l.kind, l.resource);
            let detail = l
                .detail
                .as_deref()
                .map(|d| format!("  {d}"))
                .unwrap_or_default();
            let _ = writeln!(
                err,
                " {mark} {name:<width$}  {:<12} {:>5.1}s{detail}",
                capitalised(l.status),
                secs.as_secs_f64()
            );
        }
        let _ = err.flush();
        self.drawn = self.lines.len() + 1;
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The progress callback for a compose command: the redrawn block on a terminal, plain lines
/// on stderr otherwise, JSON events on stdout with `--json`.
pub(super) fn progress(json: bool) -> impl Fn(&Progress) + Send + Sync {
    let screen =
        (!json && std::io::stderr().is_terminal()).then(|| Arc::new(Mutex::new(Screen::default())));
    move |p: &Progress| {
        if json {
            if let Ok(line) = serde_json::to_string(&serde_json::json!({"event": p})) {
                let _ = writeln!(std::io::stdout(), "{line}");
            }
        } else if let Some(screen) = &screen {
            if let Ok(mut s) = screen.lock() {
                s.update(p);
                s.draw();
            }
        } else {
            let detail = p
                .detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            eprintln!(" {:<12} {}{detail}", p.status, p.resource);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(resource: &str, service: Option<&str>, status: &'static str) -> Progress {
        Progress {
            resource: resource.into(),
            service: service.map(String::from),
            status,
            detail: None,
            kind: if service.is_some() {
                "container"
            } else {
                "network"
            },
        }
    }

    #[test]
    fn one_line_per_resource_updated_in_place_and_counted_done() {
        let mut s = Screen::default();
        s.update(&ev("shop_backend", None, "creating"));
        s.update(&ev("shop-db-1", Some("db"), "creating"));
        assert_eq!(s.lines.iter().filter(|l| l.took.is_some()).count(), 0);
        s.update(&ev("shop_backend", None, "created"));
        s.update(&ev("shop-db-1", Some("db"), "started"));
        s.update(&ev("shop-db-1", Some("db"), "waiting"));
        assert_eq!(s.lines.len(), 2, "updated, not appended");
        assert_eq!(s.lines[0].kind, "Network");
        assert_eq!(s.lines[1].kind, "Container");
        assert!(s.lines[1].took.is_none(), "waiting is not done");
        s.update(&ev("shop-db-1", Some("db"), "healthy"));
        assert!(s.lines.iter().all(|l| l.took.is_some()));
        assert_eq!(capitalised("healthy"), "Healthy");
    }
}
