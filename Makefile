# headinfer: `make run` and `make test` set up everything on a fresh
# Debian machine (as root they apt-get install the Vulkan packages).

MODEL  ?= ../shared/models/stories260K.gguf
PROMPT ?= Once upon a time
N      ?= 128
GLSLC_FLAGS = --target-env=vulkan1.2 -O -fshader-stage=compute

.PHONY: all build build-window run test shaders check-shaders bench deps gpu-bundle

# WINDOW=1 builds the binary with the live view (`--window`), which links
# glfw and X11; without it the binary is headless.
WINDOW ?=

all: build

deps:
	@scripts/deps.sh

build: deps
ifeq ($(WINDOW),1)
	go build -tags window -o headinfer .
else
	go build -o headinfer .
endif

# The windowed binary, beside the headless one.
build-window: deps
	go build -tags window -o headinfer-window .

run: build
	@test -f "$(MODEL)" || { echo "model $(MODEL) not found: pass MODEL=path/to/model.gguf (any Llama-family GGUF with F32/F16/BF16/Q8_0/Q4_0/Q4_K/Q5_K/Q6_K weights)"; exit 1; }
	./headinfer generate -m "$(MODEL)" -p "$(PROMPT)" -n $(N)

# deploy/helm/charttest renders the Helm chart with Helm's engine and decodes
# it into the Kubernetes API types: a module of its own, so that Helm and the
# Kubernetes libraries stay out of go.mod (./... does not reach into it).
#
# The server, engine and vk packages are tested under the race detector,
# except the kernel tests (engine/kernel): long runs of dispatches with no
# goroutines of their own, which -race would only slow down; and CPU
# attention's reference sweeps and the windowed cache's step-by-step
# reference (engine/offload), float loops that -race slows twentyfold,
# whose thread pool the package's other tests check under it. The server
# load and slow-body tests then run once more against a binary built with
# -race, whose "DATA RACE" reports fail them. The window's tests
# (tests/window_test.go) build the windowed binary and run it under xvfb-run
# on lavapipe. HEADINFER_NPM=1 lets the tool-call test install the openai npm
# client (it skips where node is missing).
RACE_PKGS = $$(go list ./server/... ./engine/... ./vk/... | grep -v -e '/engine/kernel$$' -e '/engine/offload$$')
RACE_SLOW = ^Test(CPUAttention(MatchesReference|Subsets|WindowSoftCap|Quant)|CacheWindowSoftCap)$$
OTHER_PKGS = $$(go list ./... | grep -v -e '^headinfer/server' -e '^headinfer/engine' -e '^headinfer/vk') ./engine/kernel/

test:
	@scripts/deps.sh test
	go vet ./...
	go vet -tags window ./window/ ./cli/
	go test -race -count=1 -timeout 30m $(RACE_PKGS)
	go test -race -count=1 -timeout 30m -skip '$(RACE_SLOW)' ./engine/offload/
	go test -count=1 -timeout 30m -run '$(RACE_SLOW)' ./engine/offload/
	HEADINFER_NPM=1 go test -count=1 -timeout 30m -skip '^TestReplicasBehindHAProxy$$' $(OTHER_PKGS)
	@# Run apart, verbose, so that its numbers show.
	@go test -count=1 -timeout 10m -v -run '^TestReplicasBehindHAProxy$$' ./tests/ >haproxy-test.log 2>&1; s=$$?; \
		grep -E '^ +haproxy_test.go|^(--- |ok |FAIL)' haproxy-test.log; [ $$s -eq 0 ] || cat haproxy-test.log; rm -f haproxy-test.log; exit $$s
	HEADINFER_E2E_RACE=1 go test -count=1 -timeout 15m -run '^(TestServerQueue|TestServerSlowBodies)$$' ./tests/
	cd deploy/helm/charttest && go test -count=1 ./...

# Compiles every shaders/*.comp to SPIR-V and validates it. The .spv files are
# committed so that `go build` needs no shader compiler.
shaders:
	@for f in shaders/*.comp; do \
		o=$${f%.comp}.spv; \
		glslc $(GLSLC_FLAGS) -Ishaders "$$f" -o "$$o" || exit 1; \
		spirv-val --target-env vulkan1.2 "$$o" || exit 1; \
	done

# Fails when the committed SPIR-V is not what the sources compile to.
check-shaders: shaders
	@git diff --exit-code --stat -- shaders/ || { echo "shaders/*.spv are stale: run make shaders and commit"; exit 1; }
	@test -z "$$(git ls-files --others --exclude-standard shaders/)" || { echo "uncommitted files in shaders/"; exit 1; }

bench: build
	go test -run '^$$' -bench . -benchtime 20x ./engine/kernel/

# dist/headinfer-gpu-bundle.tar.gz: the binary, a Vulkan loader, a small model
# and run.sh, which checks and measures a GPU on a machine without Go.
gpu-bundle: deps
	scripts/gpu-bundle.sh
