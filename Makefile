# headinfer: `make run` and `make test` set up everything on a fresh
# Debian machine (as root they apt-get install the Vulkan packages).

MODEL  ?= ../shared/models/stories260K.gguf
PROMPT ?= Once upon a time
N      ?= 128
GLSLC_FLAGS = --target-env=vulkan1.2 -O -fshader-stage=compute

.PHONY: all build run test shaders check-shaders bench deps

all: build

deps:
	@scripts/deps.sh

build: deps
	go build -o headinfer .

run: build
	@test -f "$(MODEL)" || { echo "model $(MODEL) not found: pass MODEL=path/to/model.gguf (any Llama-family GGUF with F32/F16/BF16/Q8_0/Q4_0/Q4_K/Q5_K/Q6_K weights)"; exit 1; }
	./headinfer generate -m "$(MODEL)" -p "$(PROMPT)" -n $(N)

test: deps
	go vet ./...
	go test -count=1 -timeout 30m ./...

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
