#!/usr/bin/env bash
# Build the daemons and run `ironwork demo`: a temporary runtime home with the demo plugin in
# etc/plugins/demo, the whole stack started under ringmaster (Redis on a unix socket first),
# sample files routed by the switch and processed, a killed worker replaced, then an ordered stop.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q --manifest-path "$repo/Cargo.toml" \
  -p ringmaster -p directory_observer -p ironwork-step -p conf_monitor -p ironwork
exec "$repo/target/release/ironwork" demo "$@"
