//! Audit records: the fixed canonical JSON form written to the log, and the [`Event`] builder the
//! other crates use to describe a decision.
//!
//! The canonical form is what gets hashed, so it must be unique: fixed key order, no
//! insignificant whitespace, absent values as `null`, `details` keys sorted at every depth, and a
//! fixed-width UTC time. A line that parses but does not re-serialise to the same bytes is
//! rejected by verification.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::timefmt;
use crate::Action;

/// The outcome of a security decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The act was allowed (recorded before it starts).
    Allow,
    /// The act was refused by policy.
    Deny,
    /// Deciding failed; nothing was allowed (fail closed).
    Error,
    /// No decision: what an allowed act did (an [`Action::Outcome`] record).
    Observed,
}

impl Decision {
    /// The lowercase name used in the log and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Error => "error",
            Decision::Observed => "observed",
        }
    }
}

impl std::str::FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(Decision::Allow),
            "deny" => Ok(Decision::Deny),
            "error" => Ok(Decision::Error),
            "observed" => Ok(Decision::Observed),
            _ => Err(format!(
                "`{s}` is not a decision (allow, deny, error, observed)"
            )),
        }
    }
}

/// How the actor reached perry-sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The command-line tool.
    Cli,
    /// The local API (`perry-sandbox serve`).
    Api,
}

/// Who asked: the process whose request was decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// Real user id.
    pub uid: u32,
    /// Real group id.
    pub gid: u32,
    /// Process id.
    pub pid: u32,
    /// Executable path, where known.
    pub exe: Option<String>,
    /// Entry point.
    pub via: Via,
}

impl Actor {
    /// The current process, as a CLI actor (computed once).
    pub fn current() -> Actor {
        static CUR: OnceLock<Actor> = OnceLock::new();
        CUR.get_or_init(|| Actor {
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            pid: std::process::id(),
            exe: std::env::current_exe()
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
            via: Via::Cli,
        })
        .clone()
    }

    /// An API peer identified by its socket credentials.
    pub fn api_peer(uid: u32, gid: u32, pid: u32, exe: Option<String>) -> Actor {
        Actor {
            uid,
            gid,
            pid,
            exe,
            via: Via::Api,
        }
    }
}

/// What the decision was about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// Image reference as requested.
    pub image: Option<String>,
    /// Pinned manifest digest.
    pub digest: Option<String>,
    /// Capability name from `[shellCapabilities]`.
    pub capability: Option<String>,
    /// Command and arguments.
    pub command: Option<Vec<String>>,
}

/// Which policy decided.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The matching trust rule's name.
    pub rule: Option<String>,
    /// The policy tier.
    pub tier: Option<String>,
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the log (= Merkle leaf index), from 0, continuous across segments.
    pub seq: u64,
    /// When the event was recorded, `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub time: String,
    /// Who asked.
    pub actor: Actor,
    /// What was decided, e.g. `verify`, `run`, `cap`, `config_load`.
    pub action: String,
    /// What it was about.
    pub subject: Subject,
    /// The outcome.
    pub decision: Decision,
    /// Why, in words.
    pub reason: String,
    /// Which policy applied.
    pub policy: Policy,
    /// Anything else, as a JSON object (keys sorted in the canonical form).
    #[serde(serialize_with = "sorted_map")]
    pub details: BTreeMap<String, Value>,
    /// One id across verify -> run -> exit of one request.
    pub correlation: String,
}

struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                s.collect_map(keys.into_iter().map(|k| (k, Sorted(&m[k]))))
            }
            Value::Array(a) => s.collect_seq(a.iter().map(Sorted)),
            v => v.serialize(s),
        }
    }
}

fn sorted_map<S: Serializer>(m: &BTreeMap<String, Value>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().map(|(k, v)| (k, Sorted(v))))
}

impl Record {
    /// The canonical line (without newline): the bytes that are hashed.
    pub fn to_line(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("records always serialise")
    }

    /// Parses one line and checks it is in canonical form.
    pub fn parse_line(line: &[u8]) -> Result<Record, String> {
        let r: Record = serde_json::from_slice(line).map_err(|e| format!("not a record: {e}"))?;
        if r.to_line() != line {
            return Err("not in canonical form (key order, spacing or escaping changed)".into());
        }
        match timefmt::parse_rfc3339(&r.time) {
            Ok(us) if timefmt::format_micros(us) == r.time => {}
            _ => return Err(format!("time `{}` is not canonical RFC 3339 UTC", r.time)),
        }
        Ok(r)
    }

    /// Time as microseconds since the epoch (`None` if unparsable, which canonical records never are).
    pub fn time_micros(&self) -> Option<i64> {
        timefmt::parse_rfc3339(&self.time).ok()
    }
}

/// Reads the `seq` of a line cheaply (`{"seq":N,...`), for fast scans.
pub fn peek_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 20 || rest.get(n) != Some(&b',') || (n > 1 && rest[0] == b'0') {
        return None;
    }
    std::str::from_utf8(&rest[..n]).ok()?.parse().ok()
}

/// A request id shared by every record of one request (verify -> run -> exit).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Correlation(String);

impl Correlation {
    /// A fresh random 128-bit id, as 32 hex digits.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut b)
            .expect("the OS random source works");
        Correlation(b.iter().map(|x| format!("{x:02x}")).collect())
    }

    /// Adopts an id that came from elsewhere (an API request header, a parent run).
    pub fn from_string(s: impl Into<String>) -> Self {
        Correlation(s.into())
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Correlation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A decision to record, built fluently:
///
/// ```
/// use perry_audit::{Action, Correlation, Decision, Event};
/// let id = Correlation::new();
/// let ev = Event::new(Action::Verify, Decision::Allow)
///     .image("cgr.dev/chainguard/git:latest")
///     .digest("sha256:0123")
///     .rule("policy[0]")
///     .tier("hardened")
///     .reason("keyless signature matched")
///     .detail("issuer", "https://token.actions.githubusercontent.com")
///     .correlation(&id);
/// assert_eq!(ev.correlation_id(), id.as_str());
/// ```
#[derive(Clone, Debug)]
pub struct Event {
    time: i64,
    actor: Option<Actor>,
    action: String,
    subject: Subject,
    decision: Decision,
    reason: String,
    policy: Policy,
    details: BTreeMap<String, Value>,
    correlation: String,
}

impl Event {
    /// An event for `action` ([`Action`]) with its outcome, timed
    /// now, by the current process, with a fresh correlation id.
    pub fn new(action: Action, decision: Decision) -> Self {
        Event {
            time: timefmt::now_micros(),
            actor: None,
            action: action.as_str().to_string(),
            subject: Subject::default(),
            decision,
            reason: String::new(),
            policy: Policy::default(),
            details: BTreeMap::new(),
            correlation: Correlation::new().0,
        }
    }
    /// Image reference as requested.
    pub fn image(mut self, v: impl Into<String>) -> Self {
        self.subject.image = Some(v.into());
        self
    }
    /// Pinned digest.
    pub fn digest(mut self, v: impl Into<String>) -> Self {
        self.subject.digest = Some(v.into());
        self
    }
    /// Capability name.
    pub fn capability(mut self, v: impl Into<String>) -> Self {
        self.subject.capability = Some(v.into());
        self
    }
    /// Command and arguments.
    pub fn command<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subject.command = Some(argv.into_iter().map(Into::into).collect());
        self
    }
    /// Why, in words.
    pub fn reason(mut self, v: impl Into<String>) -> Self {
        self.reason = v.into();
        self
    }
    /// The matching trust rule.
    pub fn rule(mut self, v: impl Into<String>) -> Self {
        self.policy.rule = Some(v.into());
        self
    }
    /// The policy tier.
    pub fn tier(mut self, v: impl Into<String>) -> Self {
        self.policy.tier = Some(v.into());
        self
    }
    /// Adds one `details` entry.
    pub fn detail(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }
    /// Ties this event to a request.
    pub fn correlation(mut self, id: &Correlation) -> Self {
        self.correlation = id.0.clone();
        self
    }
    /// Who asked (default: the current process via the CLI).
    pub fn actor(mut self, a: Actor) -> Self {
        self.actor = Some(a);
        self
    }
    /// Overrides the event time (microseconds since the epoch), for imports and tests.
    pub fn at_micros(mut self, us: i64) -> Self {
        self.time = us;
        self
    }
    /// The correlation id this event will carry.
    pub fn correlation_id(&self) -> &str {
        &self.correlation
    }

    /// The record this event becomes at position `seq`.
    pub fn into_record(self, seq: u64) -> Record {
        Record {
            seq,
            time: timefmt::format_micros(self.time),
            actor: self.actor.unwrap_or_else(Actor::current),
            action: self.action,
            subject: self.subject,
            decision: self.decision,
            reason: self.reason,
            policy: self.policy,
            details: self.details,
            correlation: self.correlation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_line_has_fixed_order_and_sorted_details() {
        let r = Event::new(Action::Verify, Decision::Deny)
            .at_micros(0)
            .actor(Actor::api_peer(1, 2, 3, None))
            .image("img")
            .detail("z", serde_json::json!({"b": 1, "a": [{"d": 1, "c": 2}]}))
            .detail("a", 1)
            .correlation(&Correlation::from_string("c1"))
            .into_record(7);
        let line = String::from_utf8(r.to_line()).unwrap();
        assert_eq!(
            line,
            r#"{"seq":7,"time":"1970-01-01T00:00:00.000000Z","actor":{"uid":1,"gid":2,"pid":3,"exe":null,"via":"api"},"action":"verify","subject":{"image":"img","digest":null,"capability":null,"command":null},"decision":"deny","reason":"","policy":{"rule":null,"tier":null},"details":{"a":1,"z":{"a":[{"c":2,"d":1}],"b":1}},"correlation":"c1"}"#
        );
        assert_eq!(Record::parse_line(line.as_bytes()).unwrap(), r);
        assert_eq!(peek_seq(line.as_bytes()), Some(7));
        let spaced = line.replacen(",\"time\"", ", \"time\"", 1);
        assert!(Record::parse_line(spaced.as_bytes())
            .unwrap_err()
            .contains("canonical"));
    }

    #[test]
    fn correlation_ids_are_unique_hex() {
        let a = Correlation::new();
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, Correlation::new());
    }

    proptest! {
        #[test]
        fn parse_line_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Record::parse_line(&b);
            let _ = peek_seq(&b);
        }

        #[test]
        fn any_event_round_trips(action in "\\PC{0,20}", reason in "\\PC{0,40}", k in "\\PC{0,8}", v in any::<i64>()) {
            // Any string a log may hold under `action` must round-trip, not only our names.
            let mut ev = Event::new(Action::Test, Decision::Allow).reason(reason).detail(k, v);
            ev.action = action;
            let r = ev.into_record(3);
            let line = r.to_line();
            prop_assert!(!line.contains(&b'\n'));
            prop_assert_eq!(Record::parse_line(&line).unwrap(), r);
        }
    }
}
