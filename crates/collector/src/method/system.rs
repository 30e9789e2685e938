//! The `SYSTEM` method: this host's CPU, memory, load, disks and network, from `/proc`. The
//! target is only a tag: the numbers are always local.
//!
//! The section has no keys of its own. The collection's `items` choose among `cpu`, `memory`,
//! `load`, `disk` and `network` (none: all of them); a run with an item not in that list fails
//! with kind `config` and collects nothing.
//!
//! Points, all tagged `target`:
//! - cpu (`/proc/stat`, all CPUs together): `system.cpu.<mode>_seconds`, the time spent in
//!   each mode since boot, for `user`, `nice`, `system`, `idle`, `iowait`, `irq`, `softirq` and
//!   `steal`.
//! - memory (`/proc/meminfo`): `system.memory.total_bytes`, `.available_bytes`,
//!   `.used_bytes` (total − available), `.swap_total_bytes`, `.swap_free_bytes`.
//! - load (`/proc/loadavg`): `system.load.1`, `system.load.5`, `system.load.15`.
//! - disk (`/proc/mounts`, block devices only, each device once, at its first mount point):
//!   `system.disk.total_bytes`, `.free_bytes` (what unprivileged users may still write),
//!   `.used_bytes` (total − free blocks, as `df` counts it), tagged `mount` and `device`.
//! - network (`/proc/net/dev`, every interface but `lo`): `system.net.rx_bytes`, `.tx_bytes`,
//!   `.rx_packets`, `.tx_packets`, `.rx_errors`, `.tx_errors` since boot, tagged `interface`.
//!
//! An item whose source cannot be read is left out and the run fails with kind `io`, keeping
//! the other items' points.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use ironwork_core::config::SectionReader;
use ironwork_core::messages::DataPoint;
use nix::unistd::{sysconf, SysconfVar};

use super::{point, point_with, Failure, Outcome, Probe, ProbeFuture};
use crate::collection::Run;

/// The items, in the order they are collected when none are chosen.
const ITEMS: [&str; 5] = ["cpu", "memory", "load", "disk", "network"];

/// The CPU modes reported, in `/proc/stat` order.
const CPU_MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];

/// Compile a `SYSTEM` section: nothing of its own, but its `items` are checked here so an
/// unknown one refuses the section instead of failing every run.
pub fn compile(r: &mut SectionReader<'_>) -> Arc<dyn Probe> {
    for item in r.str("items").map(super::split_list).unwrap_or_default() {
        if !ITEMS.iter().any(|known| known.eq_ignore_ascii_case(&item)) {
            r.error("items", format!("unknown item {item:?} (known: {})", ITEMS.join(", ")));
        }
    }
    Arc::new(System)
}

/// The `SYSTEM` probe.
#[derive(Debug)]
struct System;

impl Probe for System {
    fn collect<'a>(&'a self, run: &'a Run) -> ProbeFuture<'a> {
        Box::pin(async move {
            let mut items: Vec<&'static str> = Vec::new();
            for item in &run.items {
                match ITEMS.iter().find(|known| known.eq_ignore_ascii_case(item)) {
                    Some(known) if !items.contains(known) => items.push(known),
                    Some(_) => {}
                    None => {
                        return Outcome::failed(
                            "config",
                            format!("unknown item {item:?} (known: {})", ITEMS.join(", ")),
                        )
                    }
                }
            }
            if items.is_empty() {
                items = ITEMS.to_vec();
            }
            let read = tokio::task::spawn_blocking(move || read_items(&items));
            let readings = match tokio::time::timeout(run.timeout, read).await {
                Ok(Ok(readings)) => readings,
                Ok(Err(join)) => return Outcome::failed("io", format!("reading /proc: {join}")),
                Err(_) => return Outcome::failed("timeout", "reading /proc took longer than the run's timeout"),
            };
            let mut points = Vec::new();
            let mut errors = Vec::new();
            for reading in readings {
                match reading {
                    Ok(values) => points.extend(values.into_iter().map(|v| v.into_point(run))),
                    Err(e) => errors.push(e),
                }
            }
            Outcome {
                points,
                failure: (!errors.is_empty()).then(|| Failure {
                    kind: "io",
                    message: errors.join("; "),
                }),
            }
        })
    }
}

/// One measurement, before it becomes a point of a run.
#[derive(Debug, Clone, PartialEq)]
struct Value {
    name: String,
    value: serde_json::Value,
    tags: Vec<(&'static str, String)>,
}

impl Value {
    fn new(name: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            tags: Vec::new(),
        }
    }

    fn tagged(mut self, key: &'static str, value: &str) -> Self {
        self.tags.push((key, value.to_string()));
        self
    }

    fn into_point(self, run: &Run) -> DataPoint {
        if self.tags.is_empty() {
            return point(run, self.name, self.value);
        }
        let tags: BTreeMap<String, String> = self.tags.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        point_with(run, self.name, self.value, tags)
    }
}

/// Each item's values, or why its source could not be read.
fn read_items(items: &[&str]) -> Vec<Result<Vec<Value>, String>> {
    let clk_tck = match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    };
    items
        .iter()
        .map(|item| match *item {
            "cpu" => read("/proc/stat").map(|s| cpu(&s, clk_tck)),
            "memory" => read("/proc/meminfo").map(|s| memory(&s)),
            "load" => read("/proc/loadavg").map(|s| load(&s)),
            "disk" => read("/proc/mounts").map(|s| disks(&s)),
            _ => read("/proc/net/dev").map(|s| network(&s)),
        })
        .collect()
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))
}

/// Seconds per mode from the aggregate `cpu ` line of `/proc/stat` (in clock ticks). Older
/// kernels have fewer columns: the missing modes are left out.
fn cpu(stat: &str, clk_tck: f64) -> Vec<Value> {
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return Vec::new();
    };
    line.split_whitespace()
        .skip(1)
        .zip(CPU_MODES)
        .filter_map(|(ticks, mode)| {
            let ticks: u64 = ticks.parse().ok()?;
            Some(Value::new(format!("system.cpu.{mode}_seconds"), ticks as f64 / clk_tck))
        })
        .collect()
}

/// Totals from `/proc/meminfo` (in KiB there).
fn memory(meminfo: &str) -> Vec<Value> {
    let field = |key: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some(kib * 1024)
        })
    };
    let mut out = Vec::new();
    let total = field("MemTotal");
    let available = field("MemAvailable");
    if let Some(total) = total {
        out.push(Value::new("system.memory.total_bytes", total));
    }
    if let Some(available) = available {
        out.push(Value::new("system.memory.available_bytes", available));
    }
    if let (Some(total), Some(available)) = (total, available) {
        out.push(Value::new("system.memory.used_bytes", total.saturating_sub(available)));
    }
    if let Some(swap) = field("SwapTotal") {
        out.push(Value::new("system.memory.swap_total_bytes", swap));
    }
    if let Some(swap) = field("SwapFree") {
        out.push(Value::new("system.memory.swap_free_bytes", swap));
    }
    out
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`.
fn load(loadavg: &str) -> Vec<Value> {
    loadavg
        .split_whitespace()
        .zip(["1", "5", "15"])
        .filter_map(|(v, minutes)| Some(Value::new(format!("system.load.{minutes}"), v.parse::<f64>().ok()?)))
        .collect()
}

/// A block device and where it is mounted.
#[derive(Debug, PartialEq)]
struct Mount {
    device: String,
    path: String,
}

/// The block-device mounts of `/proc/mounts`, each device once (its first mount point: bind
/// mounts and btrfs subvolumes repeat a device).
fn block_mounts(mounts: &str) -> Vec<Mount> {
    let mut seen = HashSet::new();
    mounts
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let device = unescape(fields.next()?);
            let path = unescape(fields.next()?);
            (device.starts_with("/dev/") && seen.insert(device.clone())).then_some(Mount { device, path })
        })
        .collect()
}

/// `/proc/mounts` writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sizes of each block-device filesystem. A mount that cannot be queried (gone since
/// `/proc/mounts` was read, or not accessible) is skipped.
fn disks(mounts: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for m in block_mounts(mounts) {
        let st = match nix::sys::statvfs::statvfs(Path::new(&m.path)) {
            Ok(st) => st,
            Err(e) => {
                tracing::debug!(mount = %m.path, device = %m.device, error = %e, "statvfs failed, skipping");
                continue;
            }
        };
        let block = st.fragment_size();
        let total = st.blocks() * block;
        let free = st.blocks_available() * block;
        let used = st.blocks().saturating_sub(st.blocks_free()) * block;
        for (name, value) in [("total_bytes", total), ("free_bytes", free), ("used_bytes", used)] {
            out.push(
                Value::new(format!("system.disk.{name}"), value)
                    .tagged("mount", &m.path)
                    .tagged("device", &m.device),
            );
        }
    }
    out
}

/// Counters per interface from `/proc/net/dev`, loopback excluded.
fn network(dev: &str) -> Vec<Value> {
    // Receive: bytes packets errs drop fifo frame compressed multicast; Transmit: bytes packets errs …
    const COLUMNS: [(&str, usize); 6] = [
        ("rx_bytes", 0),
        ("rx_packets", 1),
        ("rx_errors", 2),
        ("tx_bytes", 8),
        ("tx_packets", 9),
        ("tx_errors", 10),
    ];
    let mut out = Vec::new();
    for line in dev.lines() {
        // Header lines have no colon; old kernels glue the first number to it (`eth0:123`).
        let Some((interface, counters)) = line.split_once(':') else {
            continue;
        };
        let interface = interface.trim();
        if interface == "lo" {
            continue;
        }
        let counters: Vec<u64> = counters.split_whitespace().filter_map(|c| c.parse().ok()).collect();
        if counters.len() < 16 {
            continue;
        }
        for (name, column) in COLUMNS {
            out.push(Value::new(format!("system.net.{name}"), counters[column]).tagged("interface", interface));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::testing;

    #[test]
    fn unknown_items_refuse_the_section() {
        let (_, errors) = testing::compile(compile, "items = cpu, Memory");
        assert!(errors.is_empty(), "{errors:?}");
        let (_, errors) = testing::compile(compile, "items = cpu, disks");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("items") && errors[0].contains("\"disks\""),
            "{errors:?}"
        );
    }

    fn find<'a>(values: &'a [Value], name: &str) -> &'a Value {
        values
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no {name} in {values:?}"))
    }

    #[test]
    fn cpu_seconds_per_mode_from_the_aggregate_line() {
        let stat = "cpu  10132153 290696 3084719 46828483 16683 0 25195 0 175628 0\n\
                    cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0\n\
                    intr 114930548 113199788 3 0 5 263 0 4 [... lots more numbers ...]\n";
        let values = cpu(stat, 100.0);
        assert_eq!(values.len(), 8, "{values:?}");
        assert_eq!(values[0], Value::new("system.cpu.user_seconds", 101321.53));
        assert_eq!(find(&values, "system.cpu.idle_seconds").value, 468284.83);
        assert_eq!(find(&values, "system.cpu.softirq_seconds").value, 251.95);
        assert_eq!(values[7].name, "system.cpu.steal_seconds");
        // A 2.6.11 kernel: no steal column.
        assert_eq!(cpu("cpu  1 2 3 4 5 6 7\n", 100.0).len(), 7);
        assert!(cpu("cpu0 1 2 3 4\n", 100.0).is_empty());
    }

    #[test]
    fn memory_in_bytes_with_used_from_available() {
        let meminfo = "MemTotal:       16303360 kB\nMemFree:         1230972 kB\n\
                       MemAvailable:   10402812 kB\nBuffers:          583356 kB\n\
                       SwapCached:            0 kB\nSwapTotal:       2097148 kB\nSwapFree:        2097148 kB\n";
        let values = memory(meminfo);
        assert_eq!(values.len(), 5, "{values:?}");
        assert_eq!(find(&values, "system.memory.total_bytes").value, 16303360u64 * 1024);
        assert_eq!(find(&values, "system.memory.available_bytes").value, 10402812u64 * 1024);
        assert_eq!(
            find(&values, "system.memory.used_bytes").value,
            (16303360u64 - 10402812) * 1024
        );
        assert_eq!(find(&values, "system.memory.swap_total_bytes").value, 2097148u64 * 1024);
        assert_eq!(find(&values, "system.memory.swap_free_bytes").value, 2097148u64 * 1024);
    }

    #[test]
    fn load_averages() {
        let values = load("0.52 0.58 0.59 2/1345 123456\n");
        assert_eq!(
            values,
            [
                Value::new("system.load.1", 0.52),
                Value::new("system.load.5", 0.58),
                Value::new("system.load.15", 0.59)
            ]
        );
    }

    #[test]
    fn block_mounts_once_per_device_with_escapes_undone() {
        let mounts = "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n\
                      /dev/nvme0n1p2 / ext4 rw,relatime,errors=remount-ro 0 0\n\
                      tmpfs /run tmpfs rw,nosuid,nodev,size=1629336k,mode=755 0 0\n\
                      /dev/nvme0n1p1 /boot/efi vfat rw,relatime 0 0\n\
                      /dev/nvme0n1p2 /var/lib/docker ext4 rw,relatime 0 0\n\
                      /dev/sdb1 /media/My\\040Disk ext4 rw 0 0\n\
                      devtmpfs /dev devtmpfs rw 0 0\n";
        let found = block_mounts(mounts);
        let pairs: Vec<(&str, &str)> = found.iter().map(|m| (m.device.as_str(), m.path.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("/dev/nvme0n1p2", "/"),
                ("/dev/nvme0n1p1", "/boot/efi"),
                ("/dev/sdb1", "/media/My Disk")
            ]
        );
        assert_eq!(unescape("a\\134b\\011c\\9"), "a\\b\tc\\9");
    }

    #[test]
    fn network_counters_per_interface_without_loopback() {
        let dev = "Inter-|   Receive                                                |  Transmit\n \
                   face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n\
                   \x20   lo: 4377190   38271    0    0    0     0          0         0  4377190   38271    0    0    0     0       0          0\n\
                   \x20 eth0:1234567890 987654    3    1    0     0          0      1200 98765432  543210    7    0    0     0       0          0\n\
                   wlan0:5 6 0 0 0 0 0 0 7 8 0 0 0 0 0 0\n";
        let values = network(dev);
        assert_eq!(values.len(), 12, "{values:?}");
        assert!(values.iter().all(|v| v.tags[0].1 != "lo"), "{values:?}");
        let eth0: BTreeMap<&str, &serde_json::Value> = values
            .iter()
            .filter(|v| v.tags == [("interface", "eth0".to_string())])
            .map(|v| (v.name.as_str(), &v.value))
            .collect();
        assert_eq!(eth0["system.net.rx_bytes"], 1234567890u64);
        assert_eq!(eth0["system.net.rx_packets"], 987654u64);
        assert_eq!(eth0["system.net.rx_errors"], 3u64);
        assert_eq!(eth0["system.net.tx_bytes"], 98765432u64);
        assert_eq!(eth0["system.net.tx_packets"], 543210u64);
        assert_eq!(eth0["system.net.tx_errors"], 7u64);
        assert_eq!(find(&values, "system.net.tx_packets").tags[0].1, "eth0");
        assert!(values
            .iter()
            .any(|v| v.tags[0].1 == "wlan0" && v.name == "system.net.tx_bytes" && v.value == 7));
    }

    #[tokio::test]
    async fn unknown_items_fail_the_run_as_config() {
        let (probe, errors) = testing::compile(compile, "");
        assert!(errors.is_empty(), "{errors:?}");
        let mut run = testing::run("localhost");
        run.items = vec!["cpu".into(), "gpu".into()];
        let out = probe.collect(&run).await;
        let failure = out.failure.expect("unknown item");
        assert_eq!(failure.kind, "config");
        assert!(failure.message.contains("\"gpu\""), "{}", failure.message);
        assert!(out.points.is_empty());
    }

    #[tokio::test]
    async fn this_host_reports_every_item() {
        let (probe, _) = testing::compile(compile, "");
        let out = probe.collect(&testing::run("localhost")).await;
        assert_eq!(out.failure, None);
        let names: HashSet<&str> = out.points.iter().map(|p| p.name.as_str()).collect();
        for name in [
            "system.cpu.user_seconds",
            "system.cpu.idle_seconds",
            "system.memory.total_bytes",
            "system.memory.used_bytes",
            "system.load.15",
        ] {
            assert!(names.contains(name), "no {name} in {names:?}");
        }
        let total = out
            .points
            .iter()
            .find(|p| p.name == "system.memory.total_bytes")
            .expect("memory");
        assert!(total.value.as_u64().is_some_and(|b| b > 1 << 26), "{total:?}");
        assert!(out
            .points
            .iter()
            .all(|p| p.tags.get("target").map(String::as_str) == Some("localhost")));
        // Disks and interfaces depend on the machine; when present they carry their tags.
        for p in out.points.iter().filter(|p| p.name.starts_with("system.disk.")) {
            assert!(
                p.tags.contains_key("mount") && p.tags["device"].starts_with("/dev/"),
                "{p:?}"
            );
        }
        for p in out.points.iter().filter(|p| p.name.starts_with("system.net.")) {
            assert!(p.tags.get("interface").is_some_and(|i| i != "lo"), "{p:?}");
        }

        let mut run = testing::run("localhost");
        run.items = vec!["Load".into()];
        let out = probe.collect(&run).await;
        let names: Vec<&str> = out.points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["system.load.1", "system.load.5", "system.load.15"]);
    }
}
