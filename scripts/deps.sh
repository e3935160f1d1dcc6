#!/usr/bin/env bash
# Installs the system packages headinfer needs to build, run and test on
# Debian/Ubuntu: the Vulkan loader and headers (cgo), Mesa's drivers (lavapipe,
# the CPU fallback device), the Khronos validation layer (tests), glslc +
# spirv-tools (make shaders), for the window (make build-window, and its
# tests under Xvfb) the X11 development headers glfw compiles against and
# xvfb. With the argument "test" (make test) also HAProxy, for the test of
# replicas behind a balancer, and headless Chromium, for the test of the web
# page. As root it installs what is missing; otherwise it prints the apt-get
# line to run and fails.
set -euo pipefail

pkgs=(libvulkan-dev mesa-vulkan-drivers vulkan-validationlayers glslc spirv-tools vulkan-tools
	libx11-dev libxcursor-dev libxrandr-dev libxinerama-dev libxi-dev libxxf86vm-dev libgl-dev xvfb xauth xdotool)
if [ "${1:-}" = test ]; then
	pkgs+=(haproxy chromium-headless-shell)
fi
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
	echo "headinfer needs the Vulkan loader and headers, a Vulkan driver, the Khronos validation layer, glslc and spirv-tools (and for the window, the X11 development headers and xvfb); install them with your package manager (Debian names: ${missing[*]})" >&2
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
