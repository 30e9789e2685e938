//! Elasticsearch-shaped error bodies and the small JSON writing helpers the answers share.

/// The error `type` Elasticsearch uses for a status, whole request or item.
pub(crate) fn error_type(status: u16) -> &'static str {
    match status {
        400 => "mapper_parsing_exception",
        401 => "security_exception",
        403 => "cluster_block_exception",
        404 => "index_not_found_exception",
        409 => "version_conflict_engine_exception",
        413 => "content_too_long_exception",
        429 => "es_rejected_execution_exception",
        500..=599 => "unavailable_shards_exception",
        _ => "exception",
    }
}

/// The `reason` of an injected fault with `status`, in Elasticsearch's words.
pub(crate) fn fault_reason(status: u16, index: &str, bytes: usize) -> String {
    match status {
        429 => format!(
            "rejected execution of primary operation [coordinating_and_primary_bytes={bytes}, \
             replica_bytes=0, all_bytes={bytes}, primary_operation_bytes={bytes}, \
             max_coordinating_and_primary_bytes=0]"
        ),
        500..=599 => format!(
            "[{index}][0] primary shard is not active Timeout: [1m], request: [BulkShardRequest \
             [[{index}][0]] containing [1] requests]"
        ),
        400 => "failed to parse".to_string(),
        401 => "unable to authenticate user for REST request [/_bulk]".to_string(),
        403 => format!("index [{index}] blocked by: [FORBIDDEN/8/index write (api)];"),
        404 => format!("no such index [{index}]"),
        409 => "version conflict".to_string(),
        413 => format!("request body is too large: {bytes} bytes"),
        _ => format!("injected failure with status {status}"),
    }
}

/// A whole-request error body: `{"error":{"root_cause":[…],"type","reason"},"status"}`.
pub(crate) fn request_error(status: u16, kind: &str, reason: &str) -> String {
    let cause = serde_json::json!({ "type": kind, "reason": reason });
    serde_json::json!({
        "error": { "root_cause": [cause], "type": kind, "reason": reason },
        "status": status,
    })
    .to_string()
}

/// Append `s` as a JSON string.
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(serde_json::Value::from(s).to_string().as_bytes());
    }
}

/// Append a decimal number (without `fmt`, which showed in profiles).
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped_only_when_needed() {
        let mut out = Vec::new();
        push_json_str(&mut out, "plain-id");
        push_json_str(&mut out, "a\"b\\c\nd");
        assert_eq!(String::from_utf8_lossy(&out), r#""plain-id""a\"b\\c\nd""#);
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        let mut out = Vec::new();
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            push_u64(&mut out, n);
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!("0 7 10 1234567890 {} ", u64::MAX)
        );
    }

    #[test]
    fn request_errors_have_elasticsearch_shape() {
        let v: serde_json::Value = serde_json::from_str(&request_error(429, error_type(429), "busy")).expect("json");
        assert_eq!(v["status"], 429);
        assert_eq!(v["error"]["type"], "es_rejected_execution_exception");
        assert_eq!(v["error"]["root_cause"][0]["reason"], "busy");
    }
}
