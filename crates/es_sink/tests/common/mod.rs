//! A tiny blocking HTTP/1.1 client (one request per connection) for the sink's tests.

#![allow(dead_code)]

use std::net::SocketAddr;

pub use ironwork_test_support::http::Answer;

/// Send one request with `Connection: close` and read the whole answer.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Answer> {
    ironwork_test_support::http::request(&addr.to_string(), method, path, headers, body)
}

pub fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Answer {
    try_request(addr, method, path, &[("content-type", "application/x-ndjson")], body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, b"")
}

pub fn bulk(addr: SocketAddr, path: &str, body: &str) -> Answer {
    request(addr, "POST", path, body.as_bytes())
}

/// `(action, status)` of every item of a bulk answer, in order.
pub fn statuses(answer: &serde_json::Value) -> Vec<(String, u64)> {
    answer["items"]
        .as_array()
        .expect("items array")
        .iter()
        .map(|item| {
            let (action, body) = item
                .as_object()
                .expect("item object")
                .iter()
                .next()
                .expect("one action");
            (action.clone(), body["status"].as_u64().expect("status"))
        })
        .collect()
}
