//! Fault injection for tests: whole-request answers queued for the next bulk requests, a
//! per-item verdict closure, a body size limit, and delays before or after processing. A test
//! builds a [`FaultPlan`] and hands it to [`crate::EsSink::set_faults`], which replaces the
//! previous plan at once.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The action of one bulk item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    /// `create`: fails with 409 when the `_id` is already stored.
    Create,
    /// `index`: adds or replaces.
    Index,
    /// `delete`: 200 when the `_id` was stored, 404 otherwise.
    Delete,
    /// `update`: not supported, answered 400 per item.
    Update,
}

impl BulkAction {
    /// The action's name in bulk requests and answers.
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Index => "index",
            Self::Delete => "delete",
            Self::Update => "update",
        }
    }
}

/// What the per-item fault closure sees of one bulk item.
#[derive(Debug, Clone, Copy)]
pub struct ItemInfo<'a> {
    /// The item's action.
    pub action: BulkAction,
    /// Target index (from the action line, else the URL).
    pub index: &'a str,
    /// The `_id` the client gave; `None` when the sink generates one.
    pub id: Option<&'a str>,
    /// The raw source line (empty for `delete`).
    pub source: &'a [u8],
    /// How many earlier items (in any request, faulted ones too) carried this `_id` for this index;
    /// always 0 without an `_id`.
    pub seen_before: u32,
    /// Position of the item in its request, from 0.
    pub position: usize,
}

impl ItemInfo<'_> {
    /// The source parsed as JSON, if it is valid JSON.
    pub fn document(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(self.source).ok()
    }
}

/// Decides per item: `Some(status)` answers the item with that status and an Elasticsearch-shaped
/// error (429 `es_rejected_execution_exception`, 5xx `unavailable_shards_exception`, 400
/// `mapper_parsing_exception`, …) and does not index it; `None` processes it normally.
pub type ItemFault = Arc<dyn Fn(&ItemInfo<'_>) -> Option<u16> + Send + Sync>;

/// One whole-request answer for a bulk request; the request is read but not indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFault {
    pub(crate) kind: RequestFaultKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestFaultKind {
    Status {
        status: u16,
        retry_after: Option<u64>,
        body: Option<String>,
    },
    Disconnect,
}

impl RequestFault {
    /// Answer with `status` and the error body Elasticsearch sends for it (429
    /// `es_rejected_execution_exception`, 503 `unavailable_shards_exception`, 413
    /// `content_too_long_exception`, …).
    pub fn status(status: u16) -> Self {
        Self {
            kind: RequestFaultKind::Status {
                status,
                retry_after: None,
                body: None,
            },
        }
    }

    /// Close the connection without answering (the client sees a reset or an early EOF).
    pub fn disconnect() -> Self {
        Self {
            kind: RequestFaultKind::Disconnect,
        }
    }

    /// Add a `Retry-After: seconds` header.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        if let RequestFaultKind::Status { retry_after, .. } = &mut self.kind {
            *retry_after = Some(seconds);
        }
        self
    }

    /// Send this body instead of the Elasticsearch-shaped one.
    pub fn body(mut self, text: impl Into<String>) -> Self {
        if let RequestFaultKind::Status { body, .. } = &mut self.kind {
            *body = Some(text.into());
        }
        self
    }
}

/// Everything a test can make the sink do wrong. The default plan injects nothing.
#[derive(Clone, Default)]
pub struct FaultPlan {
    /// Answers for the next bulk requests, one taken per request, front first.
    pub requests: VecDeque<RequestFault>,
    /// Per-item verdicts (see [`ItemFault`]).
    pub items: Option<ItemFault>,
    /// A bulk body larger than this after decompression is answered 413 as a whole.
    pub max_body_bytes: Option<usize>,
    /// Sleep this long before processing each bulk request: nothing of it is stored before the
    /// delay ends, and nothing at all if the client gives up first (a stalled server).
    pub delay: Option<Duration>,
    /// Process each bulk request, then sleep this long before answering: the documents are
    /// stored even if the client gives up, so its retry meets 409s (a slow server).
    pub delay_answer: Option<Duration>,
}

impl FaultPlan {
    /// A plan that injects nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queue a whole-request answer for the next bulk request not yet claimed by an earlier one.
    pub fn then(mut self, fault: RequestFault) -> Self {
        self.requests.push_back(fault);
        self
    }

    /// Decide per item with `f` (see [`ItemFault`]).
    pub fn items(mut self, f: impl Fn(&ItemInfo<'_>) -> Option<u16> + Send + Sync + 'static) -> Self {
        self.items = Some(Arc::new(f));
        self
    }

    /// Answer 413 to bulk bodies larger than `bytes` after decompression.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = Some(bytes);
        self
    }

    /// Sleep `delay` before processing each bulk request (see [`FaultPlan::delay`]).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Process each bulk request, then sleep `delay` before answering (see
    /// [`FaultPlan::delay_answer`]).
    pub fn delay_answer(mut self, delay: Duration) -> Self {
        self.delay_answer = Some(delay);
        self
    }
}

impl fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultPlan")
            .field("requests", &self.requests)
            .field("items", &self.items.as_ref().map(|_| "Fn(&ItemInfo) -> Option<u16>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("delay", &self.delay)
            .field("delay_answer", &self.delay_answer)
            .finish()
    }
}
