//! Following a container's output as it comes: what attached `compose up` and `compose logs
//! -f` print, line by line and from every container at once.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::{cli, BackendError};

/// Which of the container's streams a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line a container wrote (without its newline; invalid UTF-8 replaced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Its stream.
    pub stream: LogStream,
    /// The text.
    pub text: String,
}

/// A running `logs --follow`: lines from both streams in the order they are read, until the
/// container exits. Dropping it stops following (the CLI child is killed).
pub struct LogFollower {
    lines: mpsc::Receiver<LogLine>,
    _child: tokio::process::Child,
}

impl LogFollower {
    /// Starts following with `argv` (program first), which must write the container's
    /// stdout and stderr to its own.
    pub(crate) fn spawn(argv: &[String]) -> Result<LogFollower, BackendError> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| BackendError::InvalidConfig("empty backend command".into()))?;
        let mut child = cli::spawn_piped(program, args)?;
        let (tx, lines) = mpsc::channel(256);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward(out, LogStream::Stdout, tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward(err, LogStream::Stderr, tx));
        }
        Ok(LogFollower {
            lines,
            _child: child,
        })
    }

    /// The next line, or `None` once the container has exited and everything was read.
    pub async fn next_line(&mut self) -> Option<LogLine> {
        self.lines.recv().await
    }
}

async fn forward(r: impl AsyncRead + Unpin, stream: LogStream, tx: mpsc::Sender<LogLine>) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                let line = LogLine {
                    stream,
                    text: String::from_utf8_lossy(&buf).into_owned(),
                };
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        }
    }
}
