//! reflector: what happens to collected data (reflections: conditions and actions) and the
//! metric sender that delivers points to Zabbix and InfluxDB without losing any.
//!
//! - [`influx`]: writing line protocol to InfluxDB v1 and v2 over HTTP.
//! - [`line_protocol`]: InfluxDB line protocol, every element escaped as the protocol wants.
//! - [`tree`]: conditions compiled into the reflection tree (and the linear scan it replaces).
//! - [`zabbix`]: the Zabbix sender protocol: `ZBXD` framing, `sender data` requests, both
//!   response styles.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod influx;
pub mod line_protocol;
pub mod tree;
pub mod zabbix;
