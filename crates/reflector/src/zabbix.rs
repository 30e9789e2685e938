//! The Zabbix sender protocol, as `zabbix_sender` speaks it to a server or proxy trapper.
//!
//! A request is `ZBXD`, flags `0x01`, the payload length as 8 little-endian bytes (the legacy
//! `ZBXD\x01` + u64 framing, byte-identical to the current 4 + 4 form for an uncompressed payload
//! under 4 GiB), then the JSON `{"request":"sender data","data":[{"host","key","value"[,"clock"]}…]
//! [,"clock","ns"]}` with every value a string. The answer is framed the same way (the reader also
//! accepts the large-packet flag `0x04` and zlib-compressed payloads `0x02`) and says
//! `{"response":"success","info":"processed: N; failed: M; total: T; seconds spent: S"}`, or in
//! old servers' words `Processed N Failed M Total T Seconds spent S`: both are parsed.

use std::io::Read;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use serde::Serialize;

/// One value for a trapper item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// The host as Zabbix knows it.
    pub host: String,
    /// The item key.
    pub key: String,
    /// The value, as text.
    pub value: String,
    /// Seconds since the epoch of the value; `None`: the server's receive time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock: Option<i64>,
    /// Nanoseconds within `clock`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns: Option<u32>,
}

#[derive(Serialize)]
struct Request<'a> {
    request: &'static str,
    data: &'a [Item],
    #[serde(skip_serializing_if = "Option::is_none")]
    clock: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ns: Option<u32>,
}

/// The framed `sender data` request for `items`; `sent_at` (seconds, nanoseconds) is the
/// request's own clock, which `zabbix_sender` adds whenever items carry one.
pub fn request(items: &[Item], sent_at: Option<(i64, u32)>) -> Vec<u8> {
    let body = Request {
        request: "sender data",
        data: items,
        clock: sent_at.map(|t| t.0),
        ns: sent_at.map(|t| t.1),
    };
    frame(&serde_json::to_vec(&body).unwrap_or_default())
}

/// `ZBXD`, flags `0x01`, the length as 8 little-endian bytes, the payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + payload.len());
    out.extend_from_slice(b"ZBXD\x01");
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAnswer {
    /// Not a `ZBXD` frame, or cut short.
    #[error("not a Zabbix frame: {0}")]
    Frame(String),
    /// The payload is not the JSON of an answer.
    #[error("not a sender answer: {0}")]
    Json(String),
    /// `response` is not `success` (the server refused the whole request).
    #[error("the server answered {response:?}: {info}")]
    Refused {
        /// `response`.
        response: String,
        /// `info`.
        info: String,
    },
}

/// The payload of one frame from `bytes` (which must hold the whole frame).
pub fn unframe(bytes: &[u8]) -> Result<Vec<u8>, BadAnswer> {
    let bad = |m: &str| BadAnswer::Frame(m.to_string());
    if bytes.len() < 5 || &bytes[..4] != b"ZBXD" {
        return Err(bad("no ZBXD header"));
    }
    let flags = bytes[4];
    let (len_size, rest) = if flags & 0x04 != 0 {
        (8, &bytes[5..])
    } else {
        (4, &bytes[5..])
    };
    if rest.len() < len_size * 2 {
        return Err(bad("header cut short"));
    }
    let read = |b: &[u8]| b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    let len = read(&rest[..len_size]) as usize;
    let original = read(&rest[len_size..len_size * 2]) as usize;
    let end = (len_size * 2)
        .checked_add(len)
        .ok_or_else(|| bad("length out of range"))?;
    let payload = rest.get(len_size * 2..end).ok_or_else(|| bad("payload cut short"))?;
    if flags & 0x02 != 0 {
        // The announced size is the peer's word: capped, like what is actually inflated.
        let limit = original.min(MAX_ANSWER);
        let mut out = Vec::with_capacity(limit);
        flate2::read::ZlibDecoder::new(payload)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(&format!("compressed payload: {e}")))?;
        if out.len() > limit {
            return Err(bad(&format!("compressed payload inflates past {limit} bytes")));
        }
        return Ok(out);
    }
    Ok(payload.to_vec())
}

/// What the server made of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Values stored.
    pub processed: u64,
    /// Values refused (unknown host or key, wrong type…).
    pub failed: u64,
    /// Values in the request.
    pub total: u64,
}

/// Read an answer's payload (JSON) into its outcome.
pub fn parse_answer(payload: &[u8]) -> Result<Outcome, BadAnswer> {
    let v: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| BadAnswer::Json(format!("{e}: {}", String::from_utf8_lossy(payload))))?;
    let response = v["response"].as_str().unwrap_or_default().to_string();
    let info = v["info"].as_str().unwrap_or_default().to_string();
    if response != "success" {
        return Err(BadAnswer::Refused { response, info });
    }
    parse_info(&info).ok_or_else(|| BadAnswer::Json(format!("info {info:?} says no counts")))
}

/// `processed: 1; failed: 0; total: 1; seconds spent: …` or `Processed 1 Failed 0 Total 1 …`.
pub fn parse_info(info: &str) -> Option<Outcome> {
    let count = |name: &str| -> Option<u64> {
        let lower = info.to_ascii_lowercase();
        let at = lower.find(name)? + name.len();
        let rest = lower[at..].trim_start_matches([':', ' ']);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some(Outcome {
        processed: count("processed")?,
        failed: count("failed")?,
        total: count("total")?,
    })
}

/// Why a send to a trapper did not land.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No connection, no whole answer, or no answer in time: try again later.
    #[error("{0}")]
    Unreachable(String),
    /// The server answered, but not with a success.
    #[error(transparent)]
    Answer(#[from] BadAnswer),
}

/// Largest answer accepted (answers are one short JSON object).
const MAX_ANSWER: usize = 64 << 10;

/// Send `items` in one `sender data` request on a fresh connection to `host:port`, as
/// `zabbix_sender` does, and read the server's outcome; all within `timeout`.
pub async fn send(
    host: &str,
    port: u16,
    items: &[Item],
    sent_at: Option<(i64, u32)>,
    timeout: Duration,
) -> Result<Outcome, SendError> {
    let exchange = async {
        let unreachable = |e: std::io::Error| SendError::Unreachable(format!("{host}:{port}: {e}"));
        let mut stream = TcpStream::connect((host, port)).await.map_err(unreachable)?;
        stream.write_all(&request(items, sent_at)).await.map_err(unreachable)?;
        // Read until one whole frame is in (servers may keep the connection open) or EOF.
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.map_err(unreachable)?;
            if n == 0 {
                if answer.is_empty() {
                    return Err(SendError::Unreachable(format!(
                        "{host}:{port}: closed without an answer"
                    )));
                }
                return Ok(parse_answer(&unframe(&answer)?)?);
            }
            answer.extend_from_slice(&chunk[..n]);
            if let Ok(payload) = unframe(&answer) {
                return Ok(parse_answer(&payload)?);
            }
            if answer.len() > MAX_ANSWER {
                return Err(BadAnswer::Frame(format!("answer longer than {MAX_ANSWER} bytes")).into());
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(SendError::Unreachable(format!(
            "{host}:{port}: no answer within {timeout:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_info_styles_are_read() {
        let want = Outcome {
            processed: 249,
            failed: 1,
            total: 250,
        };
        assert_eq!(
            parse_info("processed: 249; failed: 1; total: 250; seconds spent: 0.002668"),
            Some(want)
        );
        assert_eq!(
            parse_info("Processed 249 Failed 1 Total 250 Seconds spent 0.002668"),
            Some(want)
        );
        assert_eq!(parse_info("nothing here"), None);
    }

    #[test]
    fn frames_round_trip_including_large_and_compressed_ones() {
        let payload = br#"{"response":"success","info":"processed: 1; failed: 0; total: 1; seconds spent: 0.1"}"#;
        assert_eq!(unframe(&frame(payload)).unwrap(), payload);
        // Large-packet flag: 8-byte length and reserved fields.
        let mut large = b"ZBXD\x05".to_vec();
        large.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        large.extend_from_slice(&0u64.to_le_bytes());
        large.extend_from_slice(payload);
        assert_eq!(unframe(&large).unwrap(), payload);
        // Compressed: zlib payload, reserved field = the original length.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, payload).unwrap();
        let packed = z.finish().unwrap();
        let mut compressed = b"ZBXD\x03".to_vec();
        compressed.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        compressed.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        compressed.extend_from_slice(&packed);
        assert_eq!(unframe(&compressed).unwrap(), payload);
        assert!(unframe(b"HTTP/1.1 400").is_err());
        assert!(unframe(&frame(payload)[..20]).is_err());
        assert_eq!(parse_answer(payload).unwrap().processed, 1);
        assert!(matches!(
            parse_answer(br#"{"response":"failed","info":"bad request"}"#),
            Err(BadAnswer::Refused { .. })
        ));
    }
}
