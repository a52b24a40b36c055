#!/usr/bin/env bash
# The offline Polos demo, end to end: starts polosd in a temp data dir on
# free ports with the local coding agent of examples/local-coding-agent (a
# scripted model: no API key, no network), asks it to write and run
# hello.js, approves the write and the exec, prints the result and stops.
#
# On a terminal the approvals are asked inline; otherwise they are given with
# `polos resume --approve`, as a script or another program would.
set -euo pipefail

BIN=${BIN:-bin}
TASK=${TASK:-"Create hello.js that prints 'Hello, world!' and run it."}
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/polos-demo.XXXXXX")
pid=""

cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		wait "$pid" || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

# The example config, with its workspace in the temp dir.
mkdir -p "$tmp/workspace"
sed -e "s#script: script.yaml#script: $here/local-coding-agent/script.yaml#" \
	-e "s#\./workspace#$tmp/workspace#g" "$here/local-coding-agent/polos.yaml" >"$tmp/polos.yaml"

"$BIN/polosd" --config "$tmp/polos.yaml" --data-dir "$tmp/data" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
	--ready-file "$tmp/ready.json" --log-level warn >"$tmp/polosd.log" 2>&1 &
pid=$!

for _ in $(seq 600); do
	[ -f "$tmp/ready.json" ] && break
	if ! kill -0 "$pid" 2>/dev/null; then
		cat "$tmp/polosd.log" >&2
		echo "demo: polosd did not start" >&2
		exit 1
	fi
	sleep 0.1
done
[ -f "$tmp/ready.json" ] || { cat "$tmp/polosd.log" >&2; echo "demo: polosd not ready after 60s" >&2; exit 1; }
cat "$tmp/polosd.log"

# The CLI finds this polosd through its data directory: the address in
# polosd.json and the operator credentials in creds/ (mode 0600, readable
# only by the user who started polosd). No URL or key to pass around.
export POLOS_DATA_DIR="$tmp/data"
echo

if [ -t 0 ] && [ -t 1 ]; then
	"$BIN/polos" run local_coding_agent --input "$TASK"
else
	id=$("$BIN/polos" run local_coding_agent --detach --input "$TASK")
	"$BIN/polos" tail "$id" --follow &
	tail_pid=$!
	# Approve every step the agent asks about (a write, then an exec).
	for _ in $(seq 600); do
		st=$("$BIN/polos" status "$id" -o json)
		if echo "$st" | grep -q '"status": "\(completed\|failed\|cancelled\)"'; then break; fi
		if echo "$st" | grep -q '"status": "waiting"'; then
			"$BIN/polos" resume "$id" --approve --feedback "approved by make demo (not on a terminal)" >/dev/null || true
		fi
		sleep 0.2
	done
	wait "$tail_pid" || true
	echo
	echo "result of $id:"
	"$BIN/polos" result "$id" --timeout 2m
	echo
	echo "workspace: $(ls "$tmp/workspace")"
	echo "hello.js says: $(cd "$tmp/workspace" && node hello.js 2>/dev/null || echo '(node not installed)')"
fi
