//! `perry-sandbox audit show|tail|verify|prove|export|checkpoint|key`: the commands security
//! reviewers use on the tamper-evident audit log, and [`audit_error`], which maps audit failures
//! onto CLI errors for every command that records a decision (through `Context::audit_log`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use perry_audit::query::{self, Filter, Follower};
use perry_audit::{AuditError, Decision, LogVerifyError, NoteVerifier, Record, VerifyOptions};

use super::{CliError, CliResult, Context, GlobalArgs};

/// `audit` subcommands.
#[derive(Subcommand, Debug)]
pub(super) enum AuditCommand {
    /// List records (a table on a terminal; --json for machine output).
    Show {
        #[command(flatten)]
        filter: FilterArgs,
        /// Only the last N matching records.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Print the last records, and with -f keep printing new ones as they are appended.
    Tail {
        /// Keep following the log.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many existing records to print first.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Recompute the Merkle tree, check the latest checkpoint's signature and root and, with
    /// --checkpoint, prove the log is an append-only extension of an older checkpoint.
    Verify {
        /// An older signed checkpoint note you kept (file).
        #[arg(long, value_name = "OLD_NOTE")]
        checkpoint: Option<PathBuf>,
        /// The verifier key you trust (`name+id+key`, or a file holding it). Default: the audit
        /// directory's own key.vkey.
        #[arg(long, value_name = "PUBKEY")]
        key: Option<String>,
    },
    /// Print an RFC 6962 inclusion proof of record SEQ against the latest checkpoint.
    Prove {
        /// The record's seq.
        seq: u64,
        /// The verifier key you trust (default: the directory's key.vkey).
        #[arg(long, value_name = "PUBKEY")]
        key: Option<String>,
    },
    /// Write matching records to stdout as JSON lines (canonical, as logged) or CSV.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Sign and write a checkpoint now, and print it.
    Checkpoint,
    /// Print the checkpoint verifier key (note vkey format) for reviewers; generates the signing
    /// key on first use. The private key is never printed.
    Key,
}

/// Export formats.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ExportFormat {
    /// One canonical JSON record per line, byte-identical to the log.
    Jsonl,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// Record filters shared by show, tail and export.
#[derive(Args, Debug, Clone, Default)]
pub(super) struct FilterArgs {
    /// Records at or after T (RFC 3339, or an age such as 15m, 2h, 7d).
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Records before T (RFC 3339, or an age).
    #[arg(long, value_name = "T")]
    until: Option<String>,
    /// Only this action (config_load, verify, run, cap, ...).
    #[arg(long, value_name = "A")]
    action: Option<String>,
    /// Only this decision (allow, deny, error).
    #[arg(long, value_name = "D")]
    decision: Option<String>,
    /// Images whose reference contains I, or whose digest is I.
    #[arg(long, value_name = "I")]
    image: Option<String>,
    /// Only this capability.
    #[arg(long, value_name = "C")]
    capability: Option<String>,
    /// Only this actor uid.
    #[arg(long, value_name = "U")]
    uid: Option<u32>,
    /// Only this correlation id.
    #[arg(long, value_name = "ID")]
    correlation: Option<String>,
}

impl FilterArgs {
    fn to_filter(&self) -> Result<Filter, CliError> {
        let bound = |s: &Option<String>, flag: &str| {
            s.as_deref()
                .map(perry_audit::timefmt::parse_bound)
                .transpose()
                .map_err(|e| CliError::invalid_argument(format!("--{flag}: {e}")))
        };
        Ok(Filter {
            since: bound(&self.since, "since")?,
            until: bound(&self.until, "until")?,
            action: self.action.clone(),
            decision: self
                .decision
                .as_deref()
                .map(str::parse::<Decision>)
                .transpose()
                .map_err(|e| CliError::invalid_argument(format!("--decision: {e}")))?,
            image: self.image.clone(),
            capability: self.capability.clone(),
            uid: self.uid,
            correlation: self.correlation.clone(),
        })
    }
}

fn verification_failed(message: String) -> CliError {
    CliError {
        code: "verification_failed".into(),
        status: 403,
        message,
        exit: 1,
    }
}

/// Maps an audit error onto the CLI's error codes: a damaged or tampered log is
/// `verification_failed` (nothing may proceed on it), I/O and key problems are `internal`.
pub(super) fn audit_error(e: AuditError) -> CliError {
    match e {
        AuditError::Corrupt { .. } | AuditError::Checkpoint { .. } => {
            verification_failed(e.to_string()).with_exit(super::error::EXIT_REFUSED)
        }
        AuditError::Config(m) => CliError::invalid_config(m),
        other => CliError::internal(other.to_string()),
    }
}

fn verify_error(e: LogVerifyError) -> CliError {
    match e {
        LogVerifyError::Io(a) => audit_error(a),
        other => verification_failed(other.to_string()),
    }
}

fn parse_key(s: &str) -> Result<NoteVerifier, CliError> {
    let text = if s.contains('+') {
        s.to_string()
    } else {
        std::fs::read_to_string(s)
            .map_err(|e| CliError::invalid_argument(format!("--key {s}: {e}")))?
    };
    NoteVerifier::parse(&text).map_err(|e| CliError::invalid_argument(format!("--key: {e}")))
}

fn internal(e: impl std::fmt::Display) -> CliError {
    CliError::internal(e.to_string())
}

/// Runs an `audit` subcommand.
pub(super) fn run(g: &GlobalArgs, cmd: AuditCommand) -> CliResult {
    let ctx = Context::load(g)?;
    let dir = ctx.config.audit_dir();
    match cmd {
        AuditCommand::Show { filter, limit } => {
            let f = filter.to_filter()?;
            let mut rows = Vec::new();
            query::for_each_record(&dir, |r, _| {
                if f.matches(r) {
                    rows.push(r.clone());
                }
                true
            })
            .map_err(audit_error)?;
            if let Some(n) = limit {
                let skip = rows.len().saturating_sub(n);
                rows.drain(..skip);
            }
            if ctx.json {
                let v = serde_json::json!({ "ok": true, "records": rows });
                println!("{v}");
            } else {
                print_table(&rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Tail {
            follow,
            lines,
            filter,
        } => tail(&ctx, &dir, follow, lines, &filter.to_filter()?),
        AuditCommand::Verify { checkpoint, key } => {
            let key = key.as_deref().map(parse_key).transpose()?;
            let old = checkpoint
                .map(|p| {
                    std::fs::read_to_string(&p)
                        .map(|t| (p.clone(), t))
                        .map_err(|e| {
                            CliError::invalid_argument(format!("--checkpoint {}: {e}", p.display()))
                        })
                })
                .transpose()?;
            let rep = perry_audit::verify(
                &dir,
                &VerifyOptions {
                    key,
                    old_checkpoint: old,
                },
            )
            .map_err(verify_error)?;
            if ctx.json {
                println!("{}", serde_json::json!({ "ok": true, "report": rep }));
            } else {
                let mut msg = format!(
                    "ok: {} records in {} segment{}, root {}",
                    rep.records,
                    rep.segments,
                    if rep.segments == 1 { "" } else { "s" },
                    rep.root
                );
                match rep.checkpoint_size {
                    Some(n) => msg.push_str(&format!("; signed checkpoint covers {n}")),
                    None => msg.push_str("; no checkpoint yet"),
                }
                if let Some(n) = rep.old_checkpoint_size {
                    msg.push_str(&format!(
                        "; consistent with the older checkpoint of size {n}"
                    ));
                }
                println!("{msg}");
                println!("key: {}", rep.key);
                for w in &rep.warnings {
                    eprintln!("warning: {w}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Prove { seq, key } => {
            let key = key.as_deref().map(parse_key).transpose()?;
            let p = perry_audit::prove(&dir, seq, key).map_err(verify_error)?;
            if ctx.json {
                println!("{}", serde_json::json!({ "ok": true, "proof": p }));
            } else {
                println!("record seq {} (leaf index {}):", p.seq, p.seq);
                println!("{}", p.record);
                println!("leaf hash (SHA-256(0x00 || record)): {}", p.leaf_hash);
                println!("tree size: {}", p.tree_size);
                println!("root (base64): {}", p.root);
                println!("inclusion proof (RFC 6962 audit path, hex, bottom-up):");
                for h in &p.proof {
                    println!("  {h}");
                }
                println!("checkpoint:");
                print!("{}", p.checkpoint);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export { format, filter } => {
            let f = filter.to_filter()?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut werr = None;
            if format == ExportFormat::Csv {
                writeln!(out, "{}", query::CSV_HEADER).map_err(internal)?;
            }
            query::for_each_record(&dir, |r, line| {
                if !f.matches(r) {
                    return true;
                }
                let res = match format {
                    ExportFormat::Jsonl => out.write_all(line).and_then(|_| out.write_all(b"\n")),
                    ExportFormat::Csv => writeln!(out, "{}", query::csv_row(r)),
                };
                match res {
                    Ok(()) => true,
                    Err(e) => {
                        werr = Some(e);
                        false
                    }
                }
            })
            .map_err(audit_error)?;
            if let Some(e) = werr {
                return Err(internal(e));
            }
            out.flush().map_err(internal)?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint => {
            let log = ctx.audit_log_for_review()?;
            let note = log.checkpoint().map_err(audit_error)?;
            let size = log.size();
            drop(log);
            if ctx.json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": true, "size": size, "checkpoint": note })
                );
            } else {
                print!("{note}");
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Key => {
            let v =
                perry_audit::verifier_key(&dir, &ctx.config.audit.origin).map_err(audit_error)?;
            if ctx.json {
                println!("{}", serde_json::json!({ "ok": true, "key": v.to_vkey() }));
            } else {
                println!("{}", v.to_vkey());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn tail(ctx: &Context, dir: &std::path::Path, follow: bool, lines: usize, f: &Filter) -> CliResult {
    let mut last = Vec::new();
    let mut next = 0u64;
    query::for_each_record(dir, |r, _| {
        next = r.seq + 1;
        if f.matches(r) {
            last.push(r.clone());
        }
        true
    })
    .map_err(audit_error)?;
    let skip = last.len().saturating_sub(lines);
    let tty = std::io::stdout().is_terminal() && !ctx.json;
    let print = |rs: &[Record], header: bool| {
        if ctx.json {
            let mut o = std::io::stdout().lock();
            for r in rs {
                let _ = o.write_all(&r.to_line());
                let _ = o.write_all(b"\n");
            }
            let _ = o.flush();
        } else {
            print_rows(rs, header, tty);
        }
    };
    print(&last[skip..], true);
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut fol = Follower::new(dir, next);
    loop {
        let new: Vec<Record> = fol
            .poll()
            .map_err(audit_error)?
            .into_iter()
            .filter(|r| f.matches(r))
            .collect();
        if !new.is_empty() {
            print(&new, false);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn subject(r: &Record) -> String {
    let s = &r.subject;
    let mut parts = Vec::new();
    if let Some(c) = &s.capability {
        parts.push(format!("cap:{c}"));
    }
    if let Some(i) = &s.image {
        parts.push(i.clone());
    } else if let Some(d) = &s.digest {
        parts.push(d.clone());
    }
    if let Some(c) = &s.command {
        parts.push(c.join(" "));
    }
    parts.join(" ")
}

fn clip(s: &str, n: usize, tty: bool) -> String {
    if !tty || s.chars().count() <= n {
        return s.to_string();
    }
    let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn print_table(rows: &[Record]) {
    print_rows(rows, true, std::io::stdout().is_terminal());
}

fn print_rows(rows: &[Record], header: bool, tty: bool) {
    let mut o = std::io::stdout().lock();
    if header {
        let _ = writeln!(
            o,
            "{:>6}  {:<24}  {:<12}  {:<8}  {:>6}  {:<40}  {:<12}  REASON",
            "SEQ", "TIME", "ACTION", "DECISION", "UID", "SUBJECT", "CORRELATION"
        );
    }
    for r in rows {
        let _ = writeln!(
            o,
            "{:>6}  {:<24}  {:<12}  {:<8}  {:>6}  {:<40}  {:<12}  {}",
            r.seq,
            &r.time[..r.time.len().min(23)],
            clip(&r.action, 12, tty),
            r.decision.as_str(),
            r.actor.uid,
            clip(&subject(r), 40, tty),
            clip(&r.correlation, 12, tty),
            clip(&r.reason.replace('\n', " "), 60, tty)
        );
    }
    let _ = o.flush();
}
