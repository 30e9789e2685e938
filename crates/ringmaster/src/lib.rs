//! ringmaster: ironwork's circus-compatible process supervisor.
//!
//! - [`config`]: circus ini → validated [`config::Config`].
//! - [`procfs`]: /proc reads (RSS, CPU, process trees).
//! - [`stream`]: children's stdout/stderr into rotated files or passthrough, and tail buffers.

pub mod config;
pub mod procfs;
pub mod stream;
