#!/usr/bin/env bash
# Bring up the stack on a throwaway runtime home: ringmaster with Redis on a unix socket as its
# first watcher, then directory_observer, the switch and a demo step. Drop files in, watch them
# routed and processed, see a crash repaired and a command sent through Redis, then stop.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p ringmaster -p directory_observer -p ironwork-step --manifest-path "$repo/Cargo.toml"
bin=$repo/target/release
export PATH=$bin:$PATH
export IRONWORK_HOME=$(mktemp -d /tmp/ironwork-demo.XXXXXX)
mkdir -p "$IRONWORK_HOME"/{var/state,var/in/incoming,log,tmp/config_auto}
cp "$repo/etc/directory_observer.ini" "$repo/etc/switch_rules.ini" "$IRONWORK_HOME/tmp/config_auto/"
trap '"$bin/ringctl" --socket "$IRONWORK_HOME/var/ringmaster.sock" quit >/dev/null 2>&1 || true; rm -rf "$IRONWORK_HOME"' EXIT
ctl() { "$bin/ringctl" --socket "$IRONWORK_HOME/var/ringmaster.sock" "$@"; }
rcli() { redis-cli -s "$IRONWORK_HOME/var/redis.sock" "$@"; }
in=$IRONWORK_HOME/var/in

echo "== runtime home: $IRONWORK_HOME"
ringmaster --log-format json "$repo/etc/ringmaster.ini" 2>"$IRONWORK_HOME/log/ringmaster.log" &
for _ in $(seq 100); do [ -S "$IRONWORK_HOME/var/redis.sock" ] && break; sleep 0.1; done
sleep 1
echo "== ringctl status"
ctl status

echo "== drop files into var/in/incoming: a.txt, b.txt, c.csv (written as NAME.t, then renamed) and blob.bin"
for f in a.txt b.txt c.csv; do
  printf 'hello from %s\n' "$f" >"$in/incoming/$f.t" && mv "$in/incoming/$f.t" "$in/incoming/$f"
done
head -c 100 /dev/urandom >"$in/incoming/blob.bin"
for _ in $(seq 100); do [ "$(rcli GET counter.demo.main)" = 3 ] && break; sleep 0.1; done
sleep 0.3
echo "== the demo step ran 'wc -c FILE' on each routed file (log/step_demo_main.log)"
grep -h '"command output"' "$IRONWORK_HOME"/log/step_demo_main.log* | grep -o '"line":"[^"]*"'
echo "== no rule matched blob.bin: kept in var/in/trash/switch.nomatch/ with its tags"
ls "$in/trash/switch.nomatch/"
grep original_basename "$in"/trash/switch.nomatch/*.tags
echo "== Redis counters: files that entered each step"
echo "switch/main: $(rcli GET counter.switch.main)  demo/main: $(rcli GET counter.demo.main)"

victim=$(ctl list step.demo.main | head -1)
echo "== kill -9 $victim (a demo step worker)"
kill -9 "$victim"
sleep 0.3
echo "== ringctl list step.demo.main (replaced)"
ctl list step.demo.main
echo "== incr step.demo.main through Redis (LPUSH ringmaster.control), reply on demo.reply"
rcli LPUSH ringmaster.control \
  '{"id":"demo-1","command":"incr","properties":{"name":"step.demo.main","reply_to":"demo.reply"}}' >/dev/null
rcli BRPOP demo.reply 5 | tail -1
echo "== ringctl quit (ordered stop: steps first, Redis last)"
ctl quit
wait
echo "== done"
