//! Shipping one batch to `_bulk` until every document in it is settled: acknowledged (2xx, or
//! 409 = already indexed by an earlier attempt) or dead-lettered (any other 4xx). Nothing else
//! ends a batch.
//!
//! - Items answered 429 or 5xx are sent again, alone, after an exponential backoff with jitter
//!   (at least the server's `Retry-After`).
//! - A whole request answered 429/5xx, a timeout or a connection error: the same documents again.
//! - 413: the batch is split in halves until it fits; a single document too large is dead-lettered.
//! - Any other whole-request 4xx (bad credentials, closed index…) dead-letters the documents
//!   with the server's answer: a permanent error is never retried forever.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use ironwork_core::backoff::Backoff;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

use crate::batch::{Batch, Item, SourcePos};
use crate::checkpoint::FileKey;
use crate::config::{Elasticsearch, Endpoint};
use crate::dead_letter::{DeadLetters, Letter};
use crate::stats::Stats;

/// A batch settled, for the committer.
#[derive(Debug)]
pub struct Done {
    /// The batch's sequence number.
    pub seq: u64,
    /// Its file positions.
    pub sources: Vec<SourcePos>,
    /// Files it reported gone.
    pub gone: Vec<FileKey>,
}

/// One HTTP/1.1 connection to Elasticsearch, opened on demand and reopened after an error.
pub struct Client {
    endpoint: Endpoint,
    path: String,
    timeout: Duration,
    gzip: bool,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// An answer to a `_bulk` request.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<Duration>,
    /// Body.
    pub body: Bytes,
}

impl Client {
    /// A client for `es`.
    pub fn new(es: &Elasticsearch) -> Self {
        Self {
            path: format!(
                "{}/_bulk?filter_path=errors,items.*.status,items.*.error",
                es.url.prefix
            ),
            endpoint: es.url.clone(),
            timeout: es.request_timeout,
            gzip: es.gzip,
            sender: None,
        }
    }

    /// POST `body` to `_bulk`; an `Err` is a transport failure (connect, reset, timeout).
    pub async fn bulk(&mut self, body: Bytes) -> Result<Reply, String> {
        let result = tokio::time::timeout(self.timeout, self.send(body)).await;
        let result =
            result.unwrap_or_else(|_| Err(format!("no answer within {}", humantime::format_duration(self.timeout))));
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn send(&mut self, body: Bytes) -> Result<Reply, String> {
        let body = if self.gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
            gz.write_all(&body).map_err(|e| e.to_string())?;
            Bytes::from(gz.finish().map_err(|e| e.to_string())?)
        } else {
            body
        };
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(self.connect().await?);
        }
        let sender = self.sender.as_mut().expect("connected above");
        sender.ready().await.map_err(|e| format!("connection: {e}"))?;
        let mut req = Request::post(self.path.as_str())
            .header(hyper::header::HOST, self.endpoint.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/x-ndjson");
        if self.gzip {
            req = req.header(hyper::header::CONTENT_ENCODING, "gzip");
        }
        if let Some(auth) = &self.endpoint.basic_auth {
            req = req.header(hyper::header::AUTHORIZATION, auth.as_str());
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reply: {e}"))?
            .to_bytes();
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let addr = self.endpoint.authority.as_str();
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake {addr}: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "elasticsearch connection ended");
            }
        });
        Ok(sender)
    }
}

#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    errors: bool,
}

#[derive(Deserialize)]
struct Items {
    items: Vec<ItemReply>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum ItemReply {
    Create(ItemStatus),
    Index(ItemStatus),
    Update(ItemStatus),
    Delete(ItemStatus),
}

#[derive(Deserialize)]
struct ItemStatus {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

impl ItemReply {
    fn status(&self) -> &ItemStatus {
        match self {
            Self::Create(s) | Self::Index(s) | Self::Update(s) | Self::Delete(s) => s,
        }
    }
}

/// What the server said about each document of one request.
enum Answer {
    /// Per item, in request order.
    Items(Vec<(u16, Option<serde_json::Value>)>),
    /// All items succeeded.
    AllOk,
    /// Not a bulk answer: retry the request.
    Garbled(String),
}

fn parse_answer(body: &[u8], expected: usize) -> Answer {
    match serde_json::from_slice::<Head>(body) {
        Ok(Head { errors: false }) => return Answer::AllOk,
        Ok(_) => {}
        Err(e) => return Answer::Garbled(format!("unreadable _bulk answer: {e}")),
    }
    match serde_json::from_slice::<Items>(body) {
        Ok(Items { items }) if items.len() == expected => Answer::Items(
            items
                .into_iter()
                .map(|i| {
                    let s = i.status();
                    (s.status, s.error.clone())
                })
                .collect(),
        ),
        Ok(Items { items }) => Answer::Garbled(format!("_bulk answered {} items for {expected}", items.len())),
        Err(e) => Answer::Garbled(format!("unreadable _bulk items: {e}")),
    }
}

fn retryable(status: u16) -> bool {
    status == 429 || status == 408 || status >= 500
}

/// Sends batches; one per in-flight request.
pub struct Shipper {
    client: Client,
    backoff: Backoff,
    retry_cap: Duration,
    stats: Stats,
    dead: Arc<DeadLetters>,
}

impl Shipper {
    /// A shipper for `es`.
    pub fn new(es: &Elasticsearch, stats: Stats, dead: Arc<DeadLetters>) -> Self {
        Self {
            client: Client::new(es),
            backoff: Backoff {
                initial: es.retry_initial,
                max: es.retry_max,
                factor: 2.0,
            },
            retry_cap: es.retry_max * 10,
            stats,
            dead,
        }
    }

    /// Take batches until the channel closes; report each once settled.
    pub async fn work(
        mut self,
        rx: Arc<Mutex<mpsc::Receiver<Batch>>>,
        done: mpsc::Sender<Done>,
        queued: Arc<AtomicU64>,
    ) {
        loop {
            let batch = { rx.lock().await.recv().await };
            let Some(batch) = batch else { break };
            let bytes = batch.body.len() as u64;
            let Batch {
                seq,
                body,
                items,
                sources,
                gone,
                letters,
                ..
            } = batch;
            self.write_letters(letters).await;
            self.ship(Bytes::from(body), &items, &sources).await;
            let left = queued.fetch_sub(bytes, Ordering::Relaxed).saturating_sub(bytes);
            self.stats.queued_bytes.set(left as i64);
            if done.send(Done { seq, sources, gone }).await.is_err() {
                break;
            }
        }
    }

    /// Send `items` of `body` until each is acknowledged or dead-lettered.
    pub async fn ship(&mut self, body: Bytes, items: &[Item], sources: &[SourcePos]) {
        if items.is_empty() {
            return;
        }
        let mut work: Vec<Vec<usize>> = vec![(0..items.len()).collect()];
        let mut attempts = self.backoff.attempts();
        while let Some(mut group) = work.pop() {
            loop {
                let request = if group.len() == items.len() {
                    body.clone()
                } else {
                    let mut b = Vec::with_capacity(group.iter().map(|&i| items[i].end - items[i].start).sum());
                    for &i in &group {
                        b.extend_from_slice(&body[items[i].start..items[i].end]);
                    }
                    Bytes::from(b)
                };
                self.stats.requests.inc();
                let wait = match self.client.bulk(request).await {
                    Err(e) => {
                        tracing::warn!(error = %e, documents = group.len(), attempt = attempts.count() + 1, "elasticsearch unreachable; will retry");
                        None
                    }
                    Ok(reply) if reply.status.is_success() => match parse_answer(&reply.body, group.len()) {
                        Answer::AllOk => {
                            self.stats.acked.add(group.len() as u64);
                            attempts.reset();
                            break;
                        }
                        Answer::Items(answers) => {
                            let (retry, letters) = self.settle(&body, items, sources, &group, answers);
                            self.write_letters(letters).await;
                            if retry.is_empty() {
                                attempts.reset();
                                break;
                            }
                            tracing::warn!(
                                retried = retry.len(),
                                of = group.len(),
                                "elasticsearch rejected documents for now (429/5xx); retrying them"
                            );
                            group = retry;
                            reply.retry_after
                        }
                        Answer::Garbled(why) => {
                            tracing::warn!(error = why, "retrying the request");
                            None
                        }
                    },
                    Ok(reply) if reply.status == StatusCode::PAYLOAD_TOO_LARGE => {
                        if group.len() == 1 {
                            let letters = reject(&body, items, sources, &group, 413, &reply.body);
                            self.write_letters(letters).await;
                        } else {
                            tracing::info!(documents = group.len(), "request too large (413); splitting it");
                            let second = group.split_off(group.len() / 2);
                            work.push(second);
                            work.push(group);
                        }
                        break;
                    }
                    Ok(reply) if retryable(reply.status.as_u16()) => {
                        tracing::warn!(
                            status = reply.status.as_u16(),
                            documents = group.len(),
                            attempt = attempts.count() + 1,
                            "elasticsearch busy or failing; will retry"
                        );
                        reply.retry_after
                    }
                    Ok(reply) => {
                        let letters = reject(&body, items, sources, &group, reply.status.as_u16(), &reply.body);
                        self.write_letters(letters).await;
                        break;
                    }
                };
                self.stats.retried.add(group.len() as u64);
                let delay = attempts.next_delay().max(wait.unwrap_or_default()).min(self.retry_cap);
                tokio::time::sleep(delay).await;
            }
        }
    }

    /// Apply per-item answers; returns the items to send again and the refused ones.
    fn settle(
        &self,
        body: &Bytes,
        items: &[Item],
        sources: &[SourcePos],
        group: &[usize],
        answers: Vec<(u16, Option<serde_json::Value>)>,
    ) -> (Vec<usize>, Vec<Letter>) {
        let mut retry = Vec::new();
        let mut letters = Vec::new();
        let (mut acked, mut duplicates) = (0u64, 0u64);
        for (&i, (status, error)) in group.iter().zip(answers) {
            match status {
                200..=299 => acked += 1,
                409 => {
                    acked += 1;
                    duplicates += 1;
                }
                s if retryable(s) => retry.push(i),
                s => letters.push(letter(body, &items[i], sources, Some(s), describe(error.as_ref()))),
            }
        }
        self.stats.acked.add(acked);
        self.stats.duplicates.add(duplicates);
        (retry, letters)
    }

    /// Write `letters` to the dead-letter file, retrying until it works: a batch settles only
    /// once its refused documents are safe (a full disk holds the pipeline, it loses nothing).
    async fn write_letters(&self, letters: Vec<Letter>) {
        if letters.is_empty() {
            return;
        }
        tracing::warn!(documents = letters.len(), path = %self.dead.path().display(), "refused documents written to the dead-letter file");
        let mut attempts = self.backoff.attempts();
        while let Err(e) = self.dead.write(&letters) {
            tracing::error!(path = %self.dead.path().display(), error = %e, documents = letters.len(), "cannot write the dead-letter file; will retry");
            tokio::time::sleep(attempts.next_delay()).await;
        }
        self.stats.dead_lettered.add(letters.len() as u64);
    }
}

/// Letters for a whole group the server refused.
fn reject(
    body: &Bytes,
    items: &[Item],
    sources: &[SourcePos],
    group: &[usize],
    status: u16,
    answer: &[u8],
) -> Vec<Letter> {
    let reason = match serde_json::from_slice::<serde_json::Value>(answer) {
        Ok(v) => describe(v.get("error")),
        Err(_) => String::from_utf8_lossy(&answer[..answer.len().min(512)]).into_owned(),
    };
    tracing::error!(
        status,
        documents = group.len(),
        reason,
        "elasticsearch refused the request; documents go to the dead-letter file"
    );
    group
        .iter()
        .map(|&i| letter(body, &items[i], sources, Some(status), reason.clone()))
        .collect()
}

/// `status type: reason` from an Elasticsearch error object.
fn describe(error: Option<&serde_json::Value>) -> String {
    match error {
        Some(serde_json::Value::Object(e)) => {
            let ty = e.get("type").and_then(|v| v.as_str()).unwrap_or("error");
            let reason = e.get("reason").and_then(|v| v.as_str()).unwrap_or("");
            format!("{ty}: {reason}")
        }
        Some(other) => other.to_string(),
        None => "no reason given".into(),
    }
}

fn letter(body: &Bytes, item: &Item, sources: &[SourcePos], status: Option<u16>, reason: String) -> Letter {
    let lines = &body[item.start..item.end];
    let split = memchr::memchr(b'\n', lines).unwrap_or(lines.len());
    let (action, document) = (&lines[..split], &lines[(split + 1).min(lines.len())..]);
    let index = serde_json::from_slice::<serde_json::Value>(action).ok().and_then(|a| {
        a.get("create")
            .and_then(|c| c.get("_index"))
            .and_then(|i| i.as_str())
            .map(str::to_string)
    });
    Letter {
        reason,
        status,
        file: sources
            .get(item.source as usize)
            .map(|s| s.path.to_path_buf())
            .unwrap_or_default(),
        offset: item.offset,
        index,
        document: document.strip_suffix(b"\n").unwrap_or(document).to_vec(),
    }
}
