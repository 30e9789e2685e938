//! reflector: what happens to collected data (reflections: conditions and actions) and the
//! metric sender that delivers points to Zabbix and InfluxDB without losing any.
//!
//! - [`line_protocol`]: InfluxDB line protocol, every element escaped as the protocol wants.
//! - [`zabbix`]: the Zabbix sender protocol: `ZBXD` framing, `sender data` requests, both
//!   response styles.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod line_protocol;
pub mod zabbix;
