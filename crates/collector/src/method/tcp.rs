//! The `TCP` method.

use std::sync::Arc;

use ironwork_core::config::SectionReader;

use super::{Outcome, Probe, ProbeFuture};
use crate::collection::Run;

/// Compile a `TCP` section.
pub fn compile(_r: &mut SectionReader<'_>) -> Arc<dyn Probe> {
    Arc::new(Todo)
}

#[derive(Debug)]
struct Todo;

impl Probe for Todo {
    fn collect<'a>(&'a self, _run: &'a Run) -> ProbeFuture<'a> {
        Box::pin(async { Outcome::failed("protocol", "not available") })
    }
}
