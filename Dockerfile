# headinfer container image: `docker build -t headinfer .`
#
# The build stage compiles the binary with cgo against the Vulkan loader's
# headers; the SPIR-V shaders are committed (shaders/*.spv) and embedded, so
# no shader compiler is needed. `make build` is not used here because it runs
# scripts/deps.sh, which installs the whole development set (validation
# layers, glslc, X11 headers for the window).
FROM golang:1.26-bookworm AS build
RUN apt-get update \
	&& apt-get install -y --no-install-recommends libvulkan-dev \
	&& rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Headless build (no -tags window: the live view links glfw and X11).
RUN CGO_ENABLED=1 go build -trimpath -ldflags='-s -w' -o /out/headinfer .

# The runtime stage: the Vulkan loader and Mesa's drivers (lavapipe for CPUs,
# RADV for AMD, ANV for Intel). NVIDIA's driver is not in the image: the
# NVIDIA container toolkit mounts the host's into the container, Vulkan ICD
# included when NVIDIA_DRIVER_CAPABILITIES names "graphics" (set below).
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
	&& apt-get install -y --no-install-recommends libvulkan1 mesa-vulkan-drivers ca-certificates \
	&& rm -rf /var/lib/apt/lists/*
# A fixed non-root uid, so that Kubernetes' runAsNonRoot can check it and
# volumes can be given to it (fsGroup). /models holds pulled GGUF files and
# /cache the Vulkan pipeline cache (os.UserCacheDir follows XDG_CACHE_HOME);
# under Kubernetes both are volumes and the root filesystem is read-only.
RUN groupadd --gid 10001 headinfer \
	&& useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin headinfer \
	&& mkdir -p /models /cache \
	&& chown 10001:10001 /models /cache
COPY --from=build /out/headinfer /usr/local/bin/headinfer
ENV HEADINFER_MODELS=/models \
	XDG_CACHE_HOME=/cache \
	NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics
USER 10001:10001
WORKDIR /models
EXPOSE 8080
# GET /health answers 200 once the model is loaded (503 while loading or
# after a device failure); it never needs the API key.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
	CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["headinfer"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
