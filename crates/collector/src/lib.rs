//! collector: scheduled collections through Redis, plugin scripts, built-in probes, and the
//! plugin agent's HTTP API.
//!
//! - [`collection`]: a compiled collection and what one run knows ([`collection::Run`]).
//! - [`method`]: the methods by name (SCRIPT, HTTP, TCP, PROCESS, SYSTEM, SNMP).

pub mod collection;
pub mod method;
