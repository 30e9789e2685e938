#!/usr/bin/env bash
# Build the daemons and run `ironwork demo`: a temporary runtime home with the demo plugin in
# etc/plugins/demo, the whole stack started under ringmaster (Redis on a unix socket first),
# sample files routed by the switch and processed, the daemons' own logs shipped by mflog2mfadmin
# into es_sink (the in-repo Elasticsearch _bulk sink), the collector running the demo plugin's
# collection and the reflector caching its values, the plugin's app behind nginx restarted under
# load without a failed request, a killed worker replaced, an ordered stop.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q --manifest-path "$repo/Cargo.toml" \
  -p ringmaster -p directory_observer -p ironwork-step -p conf_monitor -p ironwork \
  -p jsonlog2es -p es_sink -p collector -p reflector
exec "$repo/target/release/ironwork" demo "$@"
