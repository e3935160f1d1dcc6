#!/usr/bin/env bash
# run.sh OUTDIR: proves headinfer on this machine's GPU and measures it.
# Needs a Vulkan driver; nothing else (no Go, no compiler, no network).
# Writes, each as its own file under OUTDIR:
#   devices.txt        the Vulkan devices found (* marks the one used)
#   check.json         headinfer check (full): every kernel against float64, engine invariants, bandwidth
#   check-planted.txt  headinfer check --quick with a planted wrong result: must report it and exit 1
#   context.csv        prefill and decode speed at 4K and 128K positions, KV streamed head by head,
#                      decode attention on the GPU and on the CPU (Llama-3-8B geometry, 2 layers, Q8_0)
#   speed.json         prompt processing and generation speed, KV resident (same model)
#   kernels-batch.txt  the batched matrix × vectors kernel at 1, 2, 4 and 8 vectors (a decode step of
#                      that many sequences) per weight type: time, weights' GB/s, time against 1 vector
#   serve.csv          the HTTP server at 1 and 8 concurrent clients, 8 parallel sequences
#                      (Llama-2-7B geometry, 1 layer, Q8_0), with the engine's decode step time
#                      (step_p50_s) and sequences per step beside the clients' time per token
#   kernels-shapes.txt the batched kernel in other workgroup shapes (threads × rows, the rows sharing
#                      each vector's x), at 1 and 8 vectors: for choosing a GPU's batched geometry
#   speed-split.json   on a machine with two GPUs: speed.json's test with the model split over them
#   context-split.csv  … and context.csv's, 128K only
#   log.txt            what each step printed on stderr, and its exit status
# HEADINFER_DEVICE picks another device (index or name substring).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-}
if [ -z "$out" ]; then
	echo "usage: run.sh OUTDIR" >&2
	exit 2
fi
if ! mkdir -p "$out" 2>/dev/null || ! touch "$out/.writable" 2>/dev/null; then
	echo "run.sh: cannot write to $out: choose a writable folder" >&2
	exit 2
fi
rm -f "$out/.writable"
out=$(cd "$out" && pwd)
hi=$here/headinfer
log=$out/log.txt
: >"$log"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export XDG_CACHE_HOME=$work/cache

# The bundled loader serves machines whose driver came without one.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1 '; then
	export LD_LIBRARY_PATH=$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

# step NAME SECONDS OUTFILE CMD...: runs CMD with its stdout in OUTFILE
# (none: "-"), stderr in the log, at most SECONDS.
step() {
	local name=$1 secs=$2 file=$3
	shift 3
	local t0=$SECONDS rc
	echo "== $name: $*" >>"$log"
	if [ "$file" = - ]; then
		timeout "$secs" "$@" >>"$log" 2>&1
	else
		timeout "$secs" "$@" >"$out/$file" 2>>"$log"
	fi
	rc=$?
	echo "== $name: exit $rc after $((SECONDS - t0)) s" >>"$log"
	echo "$name: exit $rc ($((SECONDS - t0)) s)"
	return $rc
}

# A driver installed outside the loader's search path (containers that
# mount NVIDIA's driver) is named to the loader.
if ! "$hi" devices 2>/dev/null | grep -qv '(cpu)'; then
	for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
		if [ -f "$icd" ] && [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]; then
			export VK_DRIVER_FILES=$icd
			echo "using the Vulkan driver $icd" | tee -a "$log"
			break
		fi
	done
fi

step devices 60 devices.txt "$hi" devices
step check 300 check.json "$hi" check --json
if step planted 120 check-planted.txt "$hi" check --quick --plant-fault matvec/Q4_K; then
	echo "check did not report the planted fault" | tee -a "$log"
fi

step synth-8b 120 - "$hi" synth --preset llama3-8b --layers 2 --vocab 32000 --type q8_0 --out "$work/llama3.gguf"
step context 240 - "$hi" bench context -m "$work/llama3.gguf" --ctx 4K,128K --offload head --decode-attn gpu,cpu \
	--prefill 512 --decode 32 --csv "$out/context.csv"
step speed 120 speed.json "$hi" bench speed -m "$work/llama3.gguf" -c 4096 --pp 512 --tg 64 --reps 3 --json
# Two GPUs: the same model split over them (--devices), one layer each.
gpus=$("$hi" devices 2>/dev/null | sed -n 's/^[* ] \([0-9]*\): .*(\(discrete\|integrated\))$/\1/p' | head -2 | paste -sd, -)
if [[ $gpus == *,* ]]; then
	step speed-split 120 speed-split.json "$hi" bench speed -m "$work/llama3.gguf" -c 4096 --pp 512 --tg 64 --reps 3 --json --devices "$gpus"
	step context-split 240 - "$hi" bench context -m "$work/llama3.gguf" --ctx 128K --offload head --decode-attn gpu,cpu \
		--prefill 512 --decode 32 --devices "$gpus" --csv "$out/context-split.csv"
fi
step kernels-batch 180 kernels-batch.txt "$hi" bench kernels --types q8_0,q4_k,f16 --vectors 1,2,4,8 --iters 20
step synth-7b 120 - "$hi" synth --preset llama2-7b --layers 1 --type q8_0 --out "$work/llama2.gguf"
step serve 180 - "$hi" bench serve -m "$work/llama2.gguf" -c 1024 --parallel 8 --clients 1,8 --requests 16 \
	--prompt-tokens 128 --max-tokens 64 --csv "$out/serve.csv"
step kernels-shapes 120 kernels-shapes.txt "$hi" bench kernels --types q8_0,q4_k --vectors 1,8 \
	--geometry 128x2,128x4,64x4,64x8 --iters 20
echo "results in $out"
