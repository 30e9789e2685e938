//! es_sink: an Elasticsearch-compatible `_bulk` sink. It is the HTTP double of the fault tests of
//! ironwork's log shippers and the target of their throughput benchmarks, so it answers like
//! Elasticsearch 8 (per-item statuses in request order, 409 on a repeated `create`, 400 for a
//! source that is not a JSON object, gzip bodies) while doing as little as it can per document.
//!
//! It owns:
//! - [`EsSink`]: a sink serving from its own thread and tokio runtime, with a synchronous API for
//!   tests whatever their runtime: [`EsSink::url`], [`EsSink::count`], [`EsSink::documents`],
//!   [`EsSink::stats`], [`EsSink::set_faults`]. Dropping it stops the server.
//! - [`serve`]: the same server on a caller's listener and runtime (the `es_sink` binary).
//! - `fault`: [`FaultPlan`], what a test can make it do wrong (whole-request statuses with
//!   `Retry-After`, per-item verdicts, a body size limit, slow replies, dropped connections).
//! - `bulk` (NDJSON parsing and per-item answers), `filter` (`filter_path` on bulk answers),
//!   `store` (ids, counts, documents, index patterns), `server` (routes), `reply`
//!   (Elasticsearch-shaped errors).
//!
//! ```
//! use es_sink::{EsSink, FaultPlan, Options, RequestFault};
//!
//! let sink = EsSink::start(Options::default()).expect("start");
//! // The next bulk request is refused as Elasticsearch does when overloaded; after it, every
//! // second sighting of an `_id` fails with 503 for that item only.
//! sink.set_faults(
//!     FaultPlan::new()
//!         .then(RequestFault::status(429).retry_after(1))
//!         .items(|item| (item.seen_before == 1).then_some(503)),
//! );
//! let url = sink.url(); // give this to the shipper under test, then:
//! assert_eq!(sink.count("mflog-*"), 0);
//! assert_eq!(sink.stats().requests, 0);
//! # drop(url);
//! ```
//!
//! Routes: `POST /_bulk`, `POST /<index>/_bulk`, `GET|POST /_count`, `/<pattern>/_count`,
//! `POST /_refresh`, `/<pattern>/_refresh`, `GET|HEAD /`, `GET /_cat/indices[/<pattern>]`,
//! `GET /_cat/health`, `GET /_cluster/health`, `PUT /<index>`, `PUT /_index_template/<name>`,
//! `GET /_sink/stats`.

mod bulk;
mod fault;
mod filter;
mod reply;
mod server;
mod store;

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use fault::{BulkAction, FaultPlan, ItemFault, ItemInfo, RequestFault};
pub use store::Stats;

use server::State;

/// Elasticsearch's default `http.max_content_length`: larger bodies are answered 413.
pub const DEFAULT_MAX_CONTENT_LENGTH: usize = 100 * 1024 * 1024;

/// How a sink behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Keep every stored document (as `serde_json::Value`) for [`EsSink::documents`]; otherwise
    /// only `_id`s and counts are kept and sources are only validated.
    pub keep_documents: bool,
    /// Worker threads of the runtime [`EsSink::start`] creates (1: a current-thread runtime).
    pub threads: usize,
    /// Larger bodies (as sent, and after decompression) are answered 413.
    pub max_content_length: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            keep_documents: false,
            threads: 1,
            max_content_length: DEFAULT_MAX_CONTENT_LENGTH,
        }
    }
}

impl Options {
    /// Default options with documents kept.
    pub fn keeping_documents() -> Self {
        Self {
            keep_documents: true,
            ..Self::default()
        }
    }
}

/// A tokio runtime with `threads` workers (1: current-thread), as the sink runs on.
pub fn runtime(threads: usize) -> io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("es_sink")
            .enable_all()
            .build()
    }
}

/// Serve on `listener` until `token` is cancelled.
pub async fn serve(listener: TcpListener, options: &Options, token: CancellationToken) {
    let state = Arc::new(State::new(options.keep_documents, options.max_content_length));
    server::serve(listener, state, token).await;
}

/// A running sink on 127.0.0.1, served from its own thread; dropping it stops the server.
#[derive(Debug)]
pub struct EsSink {
    addr: SocketAddr,
    state: Arc<State>,
    token: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl EsSink {
    /// Start a sink on a free port of 127.0.0.1.
    pub fn start(options: Options) -> io::Result<EsSink> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), options)
    }

    /// Start a sink on `addr` (e.g. the address of a sink just dropped, to simulate a restart).
    pub fn start_on(addr: SocketAddr, options: Options) -> io::Result<EsSink> {
        let listener = StdListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = runtime(options.threads)?;
        let listener = {
            let _context = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let state = Arc::new(State::new(options.keep_documents, options.max_content_length));
        let token = CancellationToken::new();
        let thread = std::thread::Builder::new()
            .name(format!("es_sink-{}", addr.port()))
            .spawn({
                let (state, token) = (state.clone(), token.clone());
                move || runtime.block_on(server::serve(listener, state, token))
            })?;
        Ok(EsSink {
            addr,
            state,
            token,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Documents stored in the indices matched by `pattern` (`*` wildcards, comma lists, `_all`;
    /// empty = all); a concrete index that does not exist counts 0.
    pub fn count(&self, pattern: &str) -> u64 {
        self.state.store().count(pattern)
    }

    /// Every index with its document count, sorted by name.
    pub fn indices(&self) -> Vec<(String, u64)> {
        self.state
            .store()
            .indices()
            .into_iter()
            .map(|(n, c, _)| (n, c))
            .collect()
    }

    /// The `_id`s stored in `index`, sorted.
    pub fn ids(&self, index: &str) -> Vec<String> {
        self.state.store().ids(index)
    }

    /// The documents stored in the indices matched by `pattern`, by index name, then in the
    /// order they were first stored. Empty unless [`Options::keep_documents`].
    pub fn documents(&self, pattern: &str) -> Vec<serde_json::Value> {
        self.state.store().documents(pattern)
    }

    /// The document stored under `id` in `index` (with [`Options::keep_documents`]).
    pub fn document(&self, index: &str, id: &str) -> Option<serde_json::Value> {
        self.state.store().document(index, id)
    }

    /// What it has done so far.
    pub fn stats(&self) -> Stats {
        self.state.counters.snapshot()
    }

    /// Replace the fault plan; it applies from the next bulk request on.
    pub fn set_faults(&self, plan: FaultPlan) {
        *self.state.faults() = plan;
    }

    /// Whole-request faults still queued (not yet taken by a request).
    pub fn pending_request_faults(&self) -> usize {
        self.state.faults().requests.len()
    }
}

impl Drop for EsSink {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
