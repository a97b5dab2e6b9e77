//! Defensive parsing of backend JSON (`inspect`): missing or odd fields never panic.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{
    BackendError, ContainerInfo, ContainerStatus, Health, IsolationLevel, NetworkInfo, PortMapping,
    VolumeInfo,
};

fn bad(verb: &str, detail: impl Into<String>) -> BackendError {
    BackendError::BadOutput {
        program: "backend".into(),
        verb: verb.into(),
        detail: detail.into(),
    }
}

/// Every object of an `inspect` array (an object alone is an array of one).
pub(crate) fn objects(verb: &str, bytes: &[u8]) -> Result<Vec<Value>, BackendError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(verb, e.to_string()))?;
    let all = match v {
        Value::Array(a) => a,
        o @ Value::Object(_) => vec![o],
        _ => return Err(bad(verb, "expected a JSON array of objects")),
    };
    if all.iter().all(Value::is_object) {
        Ok(all)
    } else {
        Err(bad(verb, "expected a JSON array of objects"))
    }
}

/// The first object of an `inspect` array (or the object itself).
pub(crate) fn first_object(verb: &str, bytes: &[u8]) -> Result<Value, BackendError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(verb, e.to_string()))?;
    let o = match v {
        Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
        o @ Value::Object(_) => o,
        _ => return Err(bad(verb, "expected a JSON array with one object")),
    };
    if o.is_object() {
        Ok(o)
    } else {
        Err(bad(verb, "expected a JSON object"))
    }
}

fn s(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(n) => cur = n,
            None => return String::new(),
        }
    }
    cur.as_str().unwrap_or_default().to_string()
}

fn labels(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// A container's `inspect` object.
pub(crate) fn container(v: &Value, health: Health) -> ContainerInfo {
    let state = v.get("State").cloned().unwrap_or(Value::Null);
    let status = match s(&state, &["Status"]).as_str() {
        "created" | "configured" | "initialized" => ContainerStatus::Created,
        "running" => ContainerStatus::Running,
        "paused" => ContainerStatus::Paused,
        "exited" | "stopped" | "dead" => ContainerStatus::Exited,
        _ => ContainerStatus::Unknown,
    };
    let exit_code = state
        .get("ExitCode")
        .and_then(Value::as_i64)
        .and_then(|c| i32::try_from(c).ok());
    let net = v.get("NetworkSettings");
    let ips = net
        .and_then(|n| n.get("Networks"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, n)| (k.clone(), s(n, &["IPAddress"])))
                .collect()
        })
        .unwrap_or_default();
    let aliases = net
        .and_then(|n| n.get("Networks"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, n)| {
                    let a = n
                        .get("Aliases")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect();
                    (k.clone(), a)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    if let Some(m) = net.and_then(|n| n.get("Ports")).and_then(Value::as_object) {
        for (key, binds) in m {
            let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
            let Ok(container_port) = port.parse::<u16>() else {
                continue;
            };
            for b in binds.as_array().into_iter().flatten() {
                let host_port = s(b, &["HostPort"]).parse().unwrap_or(0);
                ports.push(PortMapping {
                    host_ip: s(b, &["HostIp"]),
                    host_port,
                    container_port,
                    protocol: proto.to_string(),
                });
            }
        }
    }
    let runtime = format!(
        "{} {}",
        s(v, &["OCIRuntime"]),
        s(v, &["HostConfig", "Runtime"])
    );
    let image_id = match s(v, &["Image"]) {
        i if i.is_empty() => s(v, &["ImageID"]),
        i => i,
    };
    ContainerInfo {
        id: s(v, &["Id"]),
        name: s(v, &["Name"]).trim_start_matches('/').to_string(),
        status,
        exit_code,
        health,
        image_id,
        ips,
        aliases,
        ports,
        labels: labels(v.get("Config").and_then(|c| c.get("Labels"))),
        isolation: if runtime.contains("runsc") {
            IsolationLevel::SandboxedKernel
        } else {
            IsolationLevel::Container
        },
        stop_signal: stop_signal(v.get("Config").and_then(|c| c.get("StopSignal"))),
        stop_timeout: v
            .get("Config")
            .and_then(|c| c.get("StopTimeout"))
            .and_then(Value::as_u64)
            .map(std::time::Duration::from_secs),
        pid: state
            .get("Pid")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p > 0),
    }
}

/// `Config.StopSignal`: podman reports a number (`15`), docker a name (`SIGTERM`); both are
/// what `kill --signal` takes. Anything else (absent, empty, not a signal's spelling) is `None`,
/// and the caller's default applies.
fn stop_signal(v: Option<&Value>) -> Option<String> {
    let sig = match v? {
        Value::Number(n) => n.as_u64().filter(|n| (1..=64).contains(n))?.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    let plausible = !sig.is_empty()
        && sig.len() <= 16
        && sig.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+');
    plausible.then_some(sig)
}

/// An image's manifest digests: `Digest` plus the digests in `RepoDigests`.
pub(crate) fn image_digests(v: &Value) -> Vec<String> {
    let mut d = vec![s(v, &["Digest"])];
    for r in v
        .get("RepoDigests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some((_, dg)) = r.as_str().and_then(|r| r.split_once('@')) {
            d.push(dg.to_string());
        }
    }
    d.retain(|x| !x.is_empty());
    d
}

/// An image's id.
pub(crate) fn image_id(v: &Value) -> String {
    s(v, &["Id"])
}

/// A network's `inspect` object (podman 4 netavark or docker shape).
pub(crate) fn network(v: &Value) -> NetworkInfo {
    let id = match s(v, &["id"]) {
        i if i.is_empty() => s(v, &["Id"]),
        i => i,
    };
    let name = match s(v, &["name"]) {
        n if n.is_empty() => s(v, &["Name"]),
        n => n,
    };
    let internal = v
        .get("internal")
        .or_else(|| v.get("Internal"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    NetworkInfo {
        name,
        id,
        internal,
        labels: labels(v.get("labels").or_else(|| v.get("Labels"))),
    }
}

/// A volume's `inspect` object.
pub(crate) fn volume(v: &Value) -> VolumeInfo {
    VolumeInfo {
        name: s(v, &["Name"]),
        mountpoint: s(v, &["Mountpoint"]),
        labels: labels(v.get("Labels")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_or_truncated_inspect_output_is_an_error_not_a_panic() {
        for b in [&b""[..], b"[]", b"{", b"[1]", b"null", b"\"x\""] {
            assert!(first_object("inspect", b).is_err(), "{:?}", b);
        }
        let v = first_object("inspect", br#"[{"State":7,"NetworkSettings":{"Ports":{"x/tcp":[1],"80/tcp":[{"HostPort":"nope"}]}}}]"#).unwrap();
        let c = container(&v, Health::None);
        assert_eq!(c.status, ContainerStatus::Unknown);
        assert_eq!(c.ports.len(), 1);
        assert_eq!(c.ports[0].host_port, 0);
    }

    #[test]
    fn stop_signal_is_taken_as_each_backend_spells_it_and_nothing_else() {
        let sig = |j: &str| stop_signal(Some(&serde_json::from_str::<Value>(j).unwrap()));
        assert_eq!(sig("15").as_deref(), Some("15"));
        assert_eq!(sig(r#""SIGQUIT""#).as_deref(), Some("SIGQUIT"));
        assert_eq!(sig(r#""SIGRTMIN+3""#).as_deref(), Some("SIGRTMIN+3"));
        for no in [
            "0",
            "65",
            "-9",
            "1.5",
            r#""""#,
            r#""--all""#,
            r#""TERM KILL""#,
            "null",
            "[]",
        ] {
            assert_eq!(sig(no), None, "{no}");
        }
        assert_eq!(stop_signal(None), None);
    }
}
