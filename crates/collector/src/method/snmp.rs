//! The `SNMP` method: one SNMP v2c GET or GETBULK request to the target, each returned
//! variable a point.
//!
//! Keys:
//! - `oids` (required): numeric OIDs separated by commas or spaces (`1.3.6.1.2.1.1.3.0`, a
//!   leading dot allowed). `{var}` placeholders are rendered per run
//!   (`1.3.6.1.2.1.31.1.1.1.6.{ifindex}`); a run whose rendered OID is not numeric fails with
//!   kind `config`.
//! - `community` (default `public`), `port` (default 161).
//! - `version`: only `2c` (the default); v1 and v3 are refused.
//! - `snmp_method`: `get` (default: the given OIDs) or `bulk` (one GETBULK: the variables
//!   following each OID, in MIB order).
//! - `non_repeaters` (default 0) and `max_repetitions` (default 10), for `bulk` only: the
//!   first `non_repeaters` OIDs get one successor each, the others up to `max_repetitions`.
//!
//! Points, tagged `target` and `oid`: `snmp.<oid>` (the returned OID, dotted) for each variable.
//! Integers, counters, gauges and timeticks are numbers; octet strings are UTF-8 text (invalid
//! bytes replaced); OIDs and IP addresses are dotted text; opaque values are hex. Variables the
//! agent answers with noSuchObject, noSuchInstance or endOfMibView (where a bulk request ran
//! off the end of the MIB) are skipped.
//!
//! Failures: no answer within the run's timeout (agent down, or a community it does not
//! accept: agents drop those silently) is kind `timeout`; an answer with a non-zero
//! error-status is kind `protocol`, naming the error and the variable it points at; a target
//! that does not resolve or an ICMP-refused port is kind `connect`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ironwork_core::config::SectionReader;
use snmp2::{AsyncSession, Oid, Value};

use super::{point_with, split_list, Failure, Outcome, Probe, ProbeFuture};
use crate::collection::Run;

/// Compile a `SNMP` section.
pub fn compile(r: &mut SectionReader<'_>) -> Arc<dyn Probe> {
    let oids = split_list(r.required("oids").unwrap_or_default());
    for oid in oids.iter().filter(|o| !o.contains('{')) {
        if let Err(msg) = parse_oid(oid) {
            r.error("oids", format!("{oid:?}: {msg}"));
        }
    }
    let community = r.str("community").unwrap_or("public").to_string();
    let port = r.parse_with("port", 161, |s| match s.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err("expected a port number from 1 to 65535".into()),
        Ok(p) => Ok(p),
    });
    r.parse_with("version", (), |s| match s.trim() {
        "2c" | "2C" => Ok(()),
        "1" => Err("SNMP v1 is not supported: use version = 2c".into()),
        "3" => Err("SNMP v3 is not supported: use version = 2c".into()),
        _ => Err("expected 2c".into()),
    });
    let bulk = r.parse_with("snmp_method", false, |s| match s.trim().to_ascii_lowercase().as_str() {
        "get" => Ok(false),
        "bulk" => Ok(true),
        _ => Err("expected get or bulk".into()),
    });
    for key in ["non_repeaters", "max_repetitions"] {
        if !bulk && r.str(key).is_some() {
            r.error(key, "only used with snmp_method = bulk");
        }
    }
    let non_repeaters = r.parse("non_repeaters", 0u32);
    let max_repetitions = r.parse("max_repetitions", 10u32);
    if bulk && max_repetitions == 0 {
        r.error("max_repetitions", "must be at least 1");
    }
    if bulk && non_repeaters as usize > oids.len() {
        r.error("non_repeaters", format!("more than the {} OIDs given", oids.len()));
    }
    let request = if bulk {
        Request::Bulk {
            non_repeaters,
            max_repetitions,
        }
    } else {
        Request::Get
    };
    Arc::new(Snmp {
        oids,
        community,
        port,
        request,
    })
}

/// The PDU a section sends.
#[derive(Debug, Clone, Copy)]
enum Request {
    Get,
    Bulk { non_repeaters: u32, max_repetitions: u32 },
}

/// A compiled `SNMP` section.
#[derive(Debug)]
struct Snmp {
    /// OIDs or templates of them.
    oids: Vec<String>,
    community: String,
    port: u16,
    request: Request,
}

impl Probe for Snmp {
    fn collect<'a>(&'a self, run: &'a Run) -> ProbeFuture<'a> {
        Box::pin(async move {
            let mut arcs = Vec::with_capacity(self.oids.len());
            for template in &self.oids {
                let oid = run.render(template);
                match parse_oid(&oid) {
                    Ok(a) => arcs.push(a),
                    Err(msg) => return Outcome::failed("config", format!("OID {oid:?}: {msg}")),
                }
            }
            let request = self.request(&run.target, &arcs);
            let variables = match tokio::time::timeout(run.timeout, request).await {
                Ok(Ok(variables)) => variables,
                Ok(Err(failure)) => return failure.into(),
                Err(_) => {
                    return Outcome::failed(
                        "timeout",
                        format!(
                            "no answer from {}:{} within {:?} (agent down, or community not accepted)",
                            run.target, self.port, run.timeout
                        ),
                    )
                }
            };
            let points = variables
                .into_iter()
                .map(|(oid, value)| {
                    let tags = BTreeMap::from([("oid".to_string(), oid.clone())]);
                    point_with(run, format!("snmp.{oid}"), value, tags)
                })
                .collect();
            Outcome::ok(points)
        })
    }
}

impl Snmp {
    /// Send the request to `host` and read the answer's variables (dotted OID, value).
    async fn request(&self, host: &str, arcs: &[Vec<u64>]) -> Result<Vec<(String, serde_json::Value)>, Failure> {
        let failure = |kind, message: String| Failure { kind, message };
        let oids = arcs
            .iter()
            .map(|a| Oid::from(a).map_err(|e| failure("config", format!("OID {a:?}: {e:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let oids: Vec<&Oid<'_>> = oids.iter().collect();
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        // A random first request id, so that a late answer to an earlier run is not taken.
        let req_id = rand::random::<i32>() & i32::MAX;
        let mut session = AsyncSession::new_v2c((host, self.port), self.community.as_bytes(), req_id)
            .await
            .map_err(|e| failure("connect", format!("{host}:{}: {e}", self.port)))?;
        let answer = match self.request {
            Request::Get => session.get_many(&oids).await,
            Request::Bulk {
                non_repeaters,
                max_repetitions,
            } => session.getbulk(&oids, non_repeaters, max_repetitions).await,
        };
        let pdu = answer.map_err(|e| match e {
            snmp2::Error::Receive | snmp2::Error::Send => {
                failure("connect", format!("{host}:{}: no agent (port refused)", self.port))
            }
            e => failure("protocol", format!("{host}:{}: {e}", self.port)),
        })?;
        if pdu.error_status != 0 {
            let index = pdu.error_index as usize;
            let at = match index.checked_sub(1).and_then(|i| arcs.get(i)) {
                Some(a) => format!(" at variable {index} ({})", dotted(a)),
                None => format!(" at variable {index}"),
            };
            return Err(failure(
                "protocol",
                format!(
                    "agent answered {} (error-status {}){at}",
                    error_name(pdu.error_status),
                    pdu.error_status
                ),
            ));
        }
        Ok(pdu
            .varbinds
            .filter_map(|(oid, value)| Some((oid.to_id_string(), json(&value)?)))
            .collect())
    }
}

/// A numeric OID: at least two arcs, each fitting 32 bits, the first 0–2 and the second below
/// 40 (the OID encoder packs the first two arcs into one byte; SNMP's OIDs all start 1.3).
fn parse_oid(s: &str) -> Result<Vec<u64>, String> {
    let s = s.trim();
    let s = s.strip_prefix('.').unwrap_or(s);
    let arcs = s
        .split('.')
        .map(|a| a.parse::<u32>().map(u64::from))
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|_| "expected a numeric OID like 1.3.6.1.2.1.1.3.0".to_string())?;
    match arcs[..] {
        [first, _, ..] if first > 2 => Err("the first arc must be 0, 1 or 2".into()),
        [_, second, ..] if second >= 40 => Err("the second arc must be below 40".into()),
        [_, _, ..] => Ok(arcs),
        _ => Err("an OID has at least two arcs".into()),
    }
}

fn dotted(arcs: &[u64]) -> String {
    arcs.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

/// A variable's value as data; None for the exceptions (noSuchObject, noSuchInstance,
/// endOfMibView) and for what a response should not hold (NULL, constructed values).
fn json(value: &Value<'_>) -> Option<serde_json::Value> {
    Some(match *value {
        Value::Integer(n) => n.into(),
        Value::Counter32(n) | Value::Unsigned32(n) | Value::Timeticks(n) => n.into(),
        Value::Counter64(n) => n.into(),
        Value::Boolean(b) => b.into(),
        Value::OctetString(bytes) => String::from_utf8_lossy(bytes).into_owned().into(),
        Value::ObjectIdentifier(ref oid) => oid.to_id_string().into(),
        Value::IpAddress(ip) => Ipv4Addr::from(ip).to_string().into(),
        Value::Opaque(bytes) => bytes
            .iter()
            .fold(String::with_capacity(bytes.len() * 2), |mut hex, b| {
                let _ = write!(hex, "{b:02x}");
                hex
            })
            .into(),
        _ => return None,
    })
}

/// RFC 3416's name of an error-status.
fn error_name(status: u32) -> &'static str {
    const NAMES: [&str; 19] = [
        "noError",
        "tooBig",
        "noSuchName",
        "badValue",
        "readOnly",
        "genErr",
        "noAccess",
        "wrongType",
        "wrongLength",
        "wrongEncoding",
        "wrongValue",
        "noCreation",
        "inconsistentValue",
        "resourceUnavailable",
        "commitFailed",
        "undoFailed",
        "authorizationError",
        "notWritable",
        "inconsistentName",
    ];
    NAMES.get(status as usize).copied().unwrap_or("an unknown error")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::UdpSocket;

    use super::*;
    use crate::method::testing;

    #[test]
    fn oids_are_numeric_with_encodable_first_arcs() {
        assert_eq!(parse_oid("1.3.6.1.2.1.1.3.0"), Ok(vec![1, 3, 6, 1, 2, 1, 1, 3, 0]));
        assert_eq!(parse_oid(".1.3.6"), Ok(vec![1, 3, 6]));
        let max = parse_oid("2.39.4294967295").expect("valid");
        assert_eq!(max, [2, 39, u64::from(u32::MAX)]);
        assert!(Oid::from(&max).is_ok());
        for bad in [
            "",
            "1",
            "1.3.6.x",
            "1..3",
            "sysDescr.0",
            "3.1",
            "1.40",
            "2.999",
            "1.3.4294967296",
        ] {
            assert!(parse_oid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_are_checked_together() {
        let (_, errors) = testing::compile(compile, "oids = 1.3.6.1.2.1.1.3.0, 1.3.6.1.2.1.2.2.1.10.{ifindex}");
        assert!(errors.is_empty(), "{errors:?}");
        let (_, errors) = testing::compile(
            compile,
            "oids = 1.3.6.1.2.1.1 ifDescr\nversion = 3\nport = 0\nsnmp_method = walk\nmax_repetitions = 5",
        );
        let all = errors.join("\n");
        assert_eq!(errors.len(), 5, "{all}");
        for wanted in [
            "oids: \"ifDescr\": expected a numeric OID",
            "version: SNMP v3 is not supported: use version = 2c",
            "port: expected a port number",
            "snmp_method: expected get or bulk",
            "max_repetitions: only used with snmp_method = bulk",
        ] {
            assert!(all.contains(wanted), "no {wanted:?} in\n{all}");
        }
        let (_, errors) = testing::compile(compile, "oids = 1.3.6.1\nversion = 1");
        assert!(errors[0].contains("SNMP v1 is not supported"), "{errors:?}");
        let (_, errors) = testing::compile(compile, "community = private");
        assert!(errors[0].contains("oids: missing required key"), "{errors:?}");
        let (_, errors) = testing::compile(
            compile,
            "oids = 1.3.6.1.2.1.1\nsnmp_method = bulk\nnon_repeaters = 2\nmax_repetitions = 0",
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn values_become_numbers_or_text() {
        assert_eq!(json(&Value::Counter64(1 << 40)), Some(serde_json::json!(1u64 << 40)));
        assert_eq!(json(&Value::Integer(-5)), Some(serde_json::json!(-5)));
        assert_eq!(json(&Value::Timeticks(123)), Some(serde_json::json!(123)));
        assert_eq!(
            json(&Value::OctetString(b"eth0\xff")),
            Some(serde_json::json!("eth0\u{fffd}"))
        );
        assert_eq!(
            json(&Value::IpAddress([10, 0, 0, 1])),
            Some(serde_json::json!("10.0.0.1"))
        );
        let oid = Oid::from(&[1, 3, 6, 1, 4, 1, 8072]).expect("oid");
        assert_eq!(
            json(&Value::ObjectIdentifier(oid)),
            Some(serde_json::json!("1.3.6.1.4.1.8072"))
        );
        assert_eq!(json(&Value::Opaque(&[0x9f, 0x78])), Some(serde_json::json!("9f78")));
        for exception in [
            Value::NoSuchObject,
            Value::NoSuchInstance,
            Value::EndOfMibView,
            Value::Null,
        ] {
            assert_eq!(json(&exception), None);
        }
        assert_eq!(error_name(2), "noSuchName");
        assert_eq!(error_name(99), "an unknown error");
    }

    /// BER type, length and contents.
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        assert!(body.len() < 128, "short form only");
        [&[tag, body.len() as u8][..], body].concat()
    }

    /// A v2c response to `request` with `error_status`/`error_index` and `varbinds` (already
    /// encoded), as an agent would send it.
    fn response(request: &[u8], error_status: u8, error_index: u8, varbinds: &[Vec<u8>]) -> Vec<u8> {
        let req = snmp2::Pdu::from_bytes(request).expect("a request");
        let id = req.req_id.to_be_bytes();
        let pdu = [
            tlv(0x02, &id),
            tlv(0x02, &[error_status]),
            tlv(0x02, &[error_index]),
            tlv(0x30, &varbinds.concat()),
        ]
        .concat();
        tlv(
            0x30,
            &[tlv(0x02, &[1]), tlv(0x04, req.community), tlv(0xa2, &pdu)].concat(),
        )
    }

    /// Answer one request on `agent` with what `answer` builds from it.
    async fn agent_answers(agent: UdpSocket, answer: impl FnOnce(&[u8]) -> Vec<u8>) {
        let mut buf = [0u8; 1500];
        let (n, peer) = agent.recv_from(&mut buf).await.expect("request");
        agent.send_to(&answer(&buf[..n]), peer).await.expect("send");
    }

    async fn probe_against(agent: &UdpSocket, keys: &str) -> (Arc<dyn Probe>, Run) {
        let port = agent.local_addr().expect("addr").port();
        let (probe, errors) = testing::compile(compile, &format!("port = {port}\n{keys}"));
        assert!(errors.is_empty(), "{errors:?}");
        (probe, testing::run("127.0.0.1"))
    }

    #[tokio::test]
    async fn exceptions_are_skipped_and_values_kept() {
        let agent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (probe, mut run) = probe_against(&agent, "oids = 1.3.6.1.2.1.1.5.0 1.3.6.1.2.1.1.{missing}.0").await;
        run.vars.insert("missing".into(), "99".into());
        let sys_name = tlv(
            0x30,
            &[tlv(0x06, &[0x2b, 6, 1, 2, 1, 1, 5, 0]), tlv(0x04, b"gw1")].concat(),
        );
        let missing = tlv(
            0x30,
            &[tlv(0x06, &[0x2b, 6, 1, 2, 1, 1, 99, 0]), vec![0x80, 0]].concat(),
        );
        let (out, ()) = tokio::join!(
            probe.collect(&run),
            agent_answers(agent, |req| response(req, 0, 0, &[sys_name, missing]))
        );
        assert_eq!(out.failure, None);
        assert_eq!(out.points.len(), 1, "{:?}", out.points);
        assert_eq!(out.points[0].name, "snmp.1.3.6.1.2.1.1.5.0");
        assert_eq!(out.points[0].value, "gw1");
        assert_eq!(out.points[0].tags["oid"], "1.3.6.1.2.1.1.5.0");
        assert_eq!(out.points[0].tags["target"], "127.0.0.1");
    }

    #[tokio::test]
    async fn an_error_status_is_a_protocol_failure_naming_the_variable() {
        let agent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (probe, run) = probe_against(&agent, "oids = 1.3.6.1.2.1.1.5.0, 1.3.6.1.2.1.1.6.0").await;
        let (out, ()) = tokio::join!(
            probe.collect(&run),
            agent_answers(agent, |req| response(req, 5, 2, &[]))
        );
        let failure = out.failure.expect("genErr");
        assert_eq!(failure.kind, "protocol");
        assert!(
            failure
                .message
                .contains("genErr (error-status 5) at variable 2 (1.3.6.1.2.1.1.6.0)"),
            "{}",
            failure.message
        );
    }

    #[tokio::test]
    async fn silence_is_a_timeout() {
        let agent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (probe, mut run) = probe_against(&agent, "oids = 1.3.6.1.2.1.1.5.0").await;
        run.timeout = Duration::from_millis(200);
        let out = probe.collect(&run).await;
        let failure = out.failure.expect("no answer");
        assert_eq!(failure.kind, "timeout");
        assert!(out.points.is_empty());
    }

    #[tokio::test]
    async fn a_rendered_oid_that_is_not_numeric_is_a_config_failure() {
        let (probe, errors) = testing::compile(compile, "oids = 1.3.6.1.2.1.2.2.1.10.{ifindex}");
        assert!(errors.is_empty(), "{errors:?}");
        let mut run = testing::run("127.0.0.1");
        run.vars.insert("ifindex".into(), "eth0".into());
        let failure = probe.collect(&run).await.failure.expect("bad OID");
        assert_eq!(failure.kind, "config");
        assert!(
            failure.message.contains("1.3.6.1.2.1.2.2.1.10.eth0"),
            "{}",
            failure.message
        );
    }
}
