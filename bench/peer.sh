#!/bin/sh
# Compares headinfer with llama.cpp's Vulkan backend (through node-llama-cpp,
# see ../shared/peers/llamacpp_node) on one model, in one run on one machine:
# pp256 and tg64, medians of 3.
#
#   bench/peer.sh [MODEL] [PEER_DIR]
#
# PEER_DIR is where ../shared/peers/llamacpp_node/setup.sh installed
# node-llama-cpp (default /tmp/peer).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
model=$(realpath "${1:-$here/../shared/models/stories260K.gguf}")
peer=${2:-/tmp/peer}
script=$here/../shared/peers/llamacpp_node/bench.mjs
go build -C "$here" -o headinfer .
# headinfer sets LP_NUM_THREADS=0 for small models on lavapipe (see
# vk.Options.InlineCPU); llama.cpp runs both ways, for a fair comparison.
for threads in default 0; do
	echo "== llama.cpp Vulkan (node-llama-cpp), LP_NUM_THREADS=$threads, 3 runs"
	for i in 1 2 3; do
		if [ "$threads" = default ]; then unset LP_NUM_THREADS; else export LP_NUM_THREADS=$threads; fi
		(cd "$peer" && node "$script" --backend vulkan --model "$model" --json --threads 1) |
			sed -n 's/^RESULT //p' | jq -c '{device, pp: .ppTokensPerSec, tg: .tgTokensPerSec}'
	done
	unset LP_NUM_THREADS
done
echo "== headinfer, median of 3"
"$here/headinfer" bench speed -m "$model" --pp 256 --tg 64 --reps 3
