#!/usr/bin/env bash
# Builds dist/headinfer-gpu-bundle.tar.gz: what a machine with a Vulkan
# driver and nothing else (no Go, no compiler, no network) needs to prove
# the engine on its GPU with one command, run.sh OUTDIR. The binary embeds
# its SPIR-V and loads the Vulkan loader at run time; the bundle carries a
# loader for machines that have a driver but no loader.
set -euo pipefail
cd "$(dirname "$0")/.."
name=headinfer-gpu-bundle
stage=dist/$name
rm -rf "$stage" "dist/$name.tar.gz"
mkdir -p "$stage/lib" "$stage/models"
CGO_ENABLED=1 go build -trimpath -ldflags '-s -w' -o "$stage/headinfer" .
loader=$(ldconfig -p | awk '/libvulkan\.so\.1 .*x86-64/ {print $NF; exit}')
if [ -n "$loader" ]; then
	cp -L "$loader" "$stage/lib/libvulkan.so.1"
else
	echo "gpu-bundle: no libvulkan.so.1 here to carry; the target machine must have a Vulkan loader" >&2
fi
cp ../shared/models/stories260K.gguf "$stage/models/"
cp scripts/bundle-run.sh "$stage/run.sh"
cp scripts/bundle-README.txt "$stage/README.txt"
chmod +x "$stage/run.sh" "$stage/headinfer"
tar -C dist -czf "dist/$name.tar.gz" "$name"
size=$(stat -c %s "dist/$name.tar.gz")
if [ "$size" -gt $((40 << 20)) ]; then
	echo "gpu-bundle: dist/$name.tar.gz is $size bytes, over 40 MiB" >&2
	exit 1
fi
echo "dist/$name.tar.gz ($((size >> 20)) MiB)"
