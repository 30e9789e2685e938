#!/usr/bin/env bash
# Bring up ringmaster on a throwaway runtime home with Redis on a unix socket as its first
# watcher, show it working (status, a crash replaced, a command through Redis, events), and stop.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p ringmaster --manifest-path "$repo/Cargo.toml"
bin=$repo/target/release
export IRONWORK_HOME=$(mktemp -d /tmp/ironwork-demo.XXXXXX)
mkdir -p "$IRONWORK_HOME"/{var/state,log}
trap '"$bin/ringctl" --socket "$IRONWORK_HOME/var/ringmaster.sock" quit >/dev/null 2>&1 || true; rm -rf "$IRONWORK_HOME"' EXIT
ctl() { "$bin/ringctl" --socket "$IRONWORK_HOME/var/ringmaster.sock" "$@"; }

echo "== runtime home: $IRONWORK_HOME"
"$bin/ringmaster" --log-format json "$repo/etc/ringmaster.ini" 2>"$IRONWORK_HOME/log/ringmaster.log" &
for _ in $(seq 100); do [ -S "$IRONWORK_HOME/var/redis.sock" ] && break; sleep 0.1; done
sleep 0.5
echo "== ringctl status"
ctl status
victim=$(ctl list heartbeat | head -1)
echo "== kill -9 $victim (a heartbeat worker)"
kill -9 "$victim"
sleep 0.2
echo "== ringctl list heartbeat (replaced)"
ctl list heartbeat
echo "== incr heartbeat through Redis (LPUSH ringmaster.control), reply on demo.reply"
redis-cli -s "$IRONWORK_HOME/var/redis.sock" LPUSH ringmaster.control \
  '{"id":"demo-1","command":"incr","properties":{"name":"heartbeat","reply_to":"demo.reply"}}' >/dev/null
redis-cli -s "$IRONWORK_HOME/var/redis.sock" BRPOP demo.reply 5 | tail -1
sleep 0.3
echo "== ringctl stats"
ctl stats
echo "== last lifecycle events in ringmaster's log"
grep -o '"event":"\(spawned\|process exited\|watcher started\)"[^}]*' "$IRONWORK_HOME/log/ringmaster.log" | tail -5
echo "== ringctl quit (ordered stop: workers first, Redis last)"
ctl quit
wait
echo "== done"
