#!/usr/bin/env bash
# Installs the system packages headinfer needs to build, run and test on
# Debian/Ubuntu: the Vulkan loader and headers (cgo), Mesa's drivers (lavapipe,
# the CPU fallback device), the Khronos validation layer (tests), and glslc +
# spirv-tools (make shaders). As root it installs what is missing; otherwise it
# prints the apt-get line to run and fails.
set -euo pipefail

pkgs=(libvulkan-dev mesa-vulkan-drivers vulkan-validationlayers glslc spirv-tools vulkan-tools)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
	echo "headinfer needs the Vulkan loader and headers, a Vulkan driver, the Khronos validation layer, glslc and spirv-tools; install them with your package manager (Debian names: ${missing[*]})" >&2
	exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "missing packages; run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
	exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
