#!/bin/sh
# Aggregate throughput and latency of headinfer replicas behind HAProxy
# (deploy/haproxy/haproxy.cfg), in one run on one machine: one replica
# alone, then three behind the balancer with session affinity and with
# round robin. Conversations (--sessions) each repeat their own prefix,
# so affinity decides how much KV is reused.
#
#   bench/replicas.sh [MODEL] [extra bench serve flags]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
model=$(realpath "${1:-$here/../shared/models/stories260K.gguf}")
[ $# -gt 0 ] && shift
go build -C "$here" -o headinfer .
hi=$here/headinfer
tmp=$(mktemp -d)
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM

serve() { # port agent-port
	"$hi" serve -m "$model" -c 1024 --parallel 4 --max-queue 64 --api-key k --port "$1" --agent-port "$2" \
		--kv-cache-dir "$tmp/kv$1" 2>"$tmp/serve$1.log" &
	pids="$pids $!"
}
wait_ready() {
	for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/health" >/dev/null && return; sleep 0.2; done
	echo "replica on $1 did not start" >&2; exit 1
}
bench() { # url label
	echo "== $2"
	"$hi" bench serve --url "$1" --api-key k --clients 1,4,12 --requests 48 --prompt-tokens 192 \
		--shared-prefix 160 --sessions 24 --max-tokens 32 "$@"
}

serve 18101 18201; serve 18102 18202; serve 18103 18203
for p in 18101 18102 18103; do wait_ready $p; done
bench http://127.0.0.1:18101 "one replica"

export HEADINFER_R1=127.0.0.1:18101 HEADINFER_R2=127.0.0.1:18102 HEADINFER_R3=127.0.0.1:18103 \
	HEADINFER_AGENT1=18201 HEADINFER_AGENT2=18202 HEADINFER_AGENT3=18203 \
	HEADINFER_MODEL=$(basename "$model" .gguf) HEADINFER_API_KEY=k HEADINFER_STATS=127.0.0.1:18404
for mode in affinity roundrobin; do
	cfg=$tmp/$mode.cfg
	if [ $mode = affinity ]; then cp "$here/deploy/haproxy/haproxy.cfg" "$cfg"
	else sed 's/balance hash var(txn.affinity)/balance roundrobin/' "$here/deploy/haproxy/haproxy.cfg" >"$cfg"; fi
	HEADINFER_LISTEN=127.0.0.1:18100 haproxy -db -f "$cfg" >"$tmp/haproxy.log" 2>&1 &
	hp=$!
	sleep 3
	bench http://127.0.0.1:18100 "three replicas, $mode"
	kill $hp; wait $hp 2>/dev/null || true
done
