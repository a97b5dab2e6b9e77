//! Crash safety: a writer process is killed (SIGKILL) at random moments 100 times. Every record
//! whose `record()` had returned must survive with its content, the log must keep verifying, and
//! torn lines must end up in quarantine rather than in the tree.
//!
//! A SIGKILL rarely lands inside a `write(2)` of a regular file, so every tenth kill is followed by
//! an injected fault: the first half of a record line appended to the active segment, as a crash
//! mid-write would leave it. Each must be reported by `verify`, then moved to quarantine by the
//! next writer, byte for byte, and never appear in the log.
//!
//! Custom harness: the test binary re-runs itself as the writer child (`crash child DIR`).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use perry_audit::query::for_each_record;
use perry_audit::{verify, Action, AuditLog, AuditSink, Decision, Event, LogOptions};

const ROUNDS: u32 = 100;

fn opts(dir: &Path) -> LogOptions {
    let mut o = LogOptions::new(dir);
    o.origin = "crash.example/audit".into();
    o.checkpoint_every = 13;
    o.checkpoint_interval = Duration::from_millis(5);
    o.segment_size = 64 * 1024;
    o
}

/// The writer: 3 threads appending as fast as they can, printing `seq token` after each durable
/// record, until killed.
fn child(dir: &Path, round: u32) -> ! {
    let log = Arc::new(AuditLog::open(opts(dir)).expect("child opens the log"));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let log = log.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let token = format!("r{round}t{t}i{i}");
                    let seq = log
                        .record(
                            Event::new(Action::Run, Decision::Allow).detail("token", token.clone()),
                        )
                        .expect("record");
                    let mut o = out.lock().unwrap();
                    writeln!(o, "{seq} {token}").unwrap();
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    std::process::exit(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        child(Path::new(&args[2]), args[3].parse().unwrap());
    }
    if args.iter().any(|a| a == "--list") {
        println!("crash_kill_100_times: test");
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let me = std::env::current_exe().unwrap();
    let mut seed =
        started.elapsed().as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut acked: Vec<(u64, String)> = Vec::new();
    let mut torn: Vec<Vec<u8>> = Vec::new();
    for round in 0..ROUNDS {
        let mut c = Command::new(&me)
            .args(["child", dir.path().to_str().unwrap(), &round.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = c.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| {
                    let (s, t) = l.split_once(' ')?;
                    Some((s.parse::<u64>().ok()?, t.to_string()))
                })
                .collect::<Vec<_>>()
        });
        // Sometimes before the log is even open, mostly mid-stream.
        std::thread::sleep(Duration::from_micros(rand() % 80_000));
        c.kill().unwrap();
        let status = c.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: child must have been killed"
        );
        acked.extend(reader.join().unwrap());
        let active = dir.path().join("log.jsonl");
        if round % 10 == 4 && active.exists() {
            let before = verify(dir.path(), &Default::default())
                .unwrap_or_else(|e| panic!("round {round}: verify before injecting: {e}"));
            let half = format!(
                r#"{{"seq":{},"time":"2026-01-01T00:00:00.000000Z","actor":{{"uid":0,"gid":0,"pid":1,"exe":null,"via":"cli"}},"action":"torn-{round}"#,
                before.records
            );
            std::fs::OpenOptions::new()
                .append(true)
                .open(&active)
                .and_then(|mut f| f.write_all(half.as_bytes()))
                .unwrap();
            let rep = verify(dir.path(), &Default::default())
                .unwrap_or_else(|e| panic!("round {round}: verify with a torn tail: {e}"));
            assert_eq!(rep.records, before.records, "a torn line is not a record");
            assert_eq!(
                rep.torn_tail_bytes,
                before.torn_tail_bytes + half.len() as u64
            );
            assert!(rep.warnings.iter().any(|w| w.contains("torn last line")));
            torn.push(half.into_bytes());
        }
        // Read-only verification passes at any point, even with a torn tail pending.
        if round % 10 == 9 {
            verify(dir.path(), &Default::default())
                .unwrap_or_else(|e| panic!("round {round}: verify after kill: {e}"));
        }
    }
    // A final writer recovers (quarantining any torn tail) and closes with a checkpoint.
    AuditLog::open(opts(dir.path())).unwrap().close().unwrap();
    let rep = verify(dir.path(), &Default::default()).unwrap();
    let mut by_seq = std::collections::HashMap::new();
    for_each_record(dir.path(), |r, _| {
        by_seq.insert(r.seq, r.details["token"].as_str().unwrap_or("").to_string());
        true
    })
    .unwrap();
    assert_eq!(by_seq.len() as u64, rep.records);
    for (seq, token) in &acked {
        assert_eq!(
            by_seq.get(seq),
            Some(token),
            "acknowledged record seq {seq} ({token}) did not survive"
        );
    }
    assert!(
        acked.len() > 100,
        "only {} records acknowledged",
        acked.len()
    );
    assert_eq!(rep.checkpoint_size, Some(rep.records));
    // Every injected torn line is in quarantine, reported, and nowhere in the log.
    assert!(torn.len() >= 9, "only {} torn lines injected", torn.len());
    // Two injections with no writer opening the log in between (every child of those rounds
    // killed before it opened it) form one torn tail and so one quarantine file; what matters is
    // that each injected line is in some quarantine file, checked below.
    assert!(!rep.quarantined.is_empty(), "nothing was quarantined");
    let quarantined: Vec<Vec<u8>> = rep
        .quarantined
        .iter()
        .map(|q| std::fs::read(&q.path).unwrap())
        .collect();
    let mut log_bytes = Vec::new();
    for s in perry_audit::store::segments(dir.path()).unwrap() {
        log_bytes.extend(std::fs::read(&s.path).unwrap());
    }
    for t in &torn {
        assert!(
            quarantined
                .iter()
                .any(|q| q.windows(t.len()).any(|w| w == t.as_slice())),
            "torn line {} not quarantined",
            String::from_utf8_lossy(t)
        );
        let marker = &t[t.len() - 12..];
        assert!(
            !log_bytes.windows(marker.len()).any(|w| w == marker),
            "torn line merged into the log"
        );
        assert!(rep
            .warnings
            .iter()
            .any(|w| w.contains("quarantined torn line")));
    }
    println!(
        "crash_kill_100_times: {ROUNDS} kills, {} acknowledged records all survived, {} records, {} segments, {} torn lines quarantined, {:.1}s",
        acked.len(),
        rep.records,
        rep.segments,
        rep.quarantined.len(),
        started.elapsed().as_secs_f64()
    );
    println!("1 passed, 0 failed");
}
