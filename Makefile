# idefics2-go — see README.md. `make run` and `make test` are the two commands a new user needs.
GO        ?= go
export GOFLAGS ?= -buildvcs=false
OLLAMA    := github.com/ollama/ollama
BIN       := bin
LIBDIR    := $(BIN)/lib

# ggml's headers come from the pinned ollama module (never copied into this repository).
OLLAMA_DIR = $(shell $(GO) mod download $(OLLAMA) >/dev/null 2>&1; $(GO) list -m -f '{{.Dir}}' $(OLLAMA))
export CGO_CPPFLAGS = -I$(OLLAMA_DIR)/ml/backend/ggml/ggml/include
# Per-ISA CPU backends, built once and cached outside the clone (scripts/ggml-cpu-variants.sh).
GGML_CPU_DIR = $(shell scripts/ggml-cpu-variants.sh --dir)

RUN_MODEL_DIR := testdata/demo/checkpoint-bf16
RUN_OUT       := $(BIN)/demo
RUN_IMAGE     ?= testdata/demo/images/demo_00.png
RUN_PROMPT    ?= What shape is in the picture?

.PHONY: all build ggml-cpu test test-isa test-arm64 test-short run bench bench-go fmt vet env clean cuda test-cuda check-llamacpp

all: build

ggml-cpu:
	@scripts/ggml-cpu-variants.sh >/dev/null

build: ggml-cpu
	@mkdir -p $(LIBDIR)
	@cp -P $(GGML_CPU_DIR)/*.so* $(LIBDIR)/ 2>/dev/null || true
	$(GO) build -o $(BIN)/idefics2-run ./cmd/idefics2-run
	$(GO) build -o $(BIN)/convert ./cmd/convert

test: ggml-cpu
	IDEFICS2_LIB_DIR=$(GGML_CPU_DIR) $(GO) test -count=1 ./...

# The whole suite at every instruction-set level this machine can run (scripts/isa-levels.sh), each as a CPU of
# that level would run it: IDEFICS2_MAX_ISA caps ggml's CPU variant and this project's kernel paths.
test-isa: ggml-cpu
	@set -e; for level in $$(scripts/isa-levels.sh); do \
		echo "== IDEFICS2_MAX_ISA=$$level"; \
		IDEFICS2_MAX_ISA=$$level IDEFICS2_LIB_DIR=$(GGML_CPU_DIR) $(GO) test -count=1 ./...; \
	done

# The ggml, quant and graph tests cross-built for linux/arm64 and run under qemu-user (NEON paths exact as on
# x86-64; plus the shared parity check on the p1 fixture cases when ../shared is present): scripts/test-arm64.sh.
test-arm64:
	GO=$(GO) scripts/test-arm64.sh

test-short: ggml-cpu
	IDEFICS2_LIB_DIR=$(GGML_CPU_DIR) $(GO) test -short ./...

# The whole path on the small trained demo model shipped in testdata: convert the bf16 checkpoint, then ask about a
# picture (Hugging Face answers "A red circle." for the default question and image).
run: build
	@$(BIN)/idefics2-run info | sed -n '1p;/CPU backend in use/p'
	@mkdir -p $(RUN_OUT)
	@[ -s $(RUN_OUT)/demo.gguf ] && [ -s $(RUN_OUT)/mmproj-demo.gguf ] || \
		$(BIN)/convert --in $(RUN_MODEL_DIR) --out $(RUN_OUT)/demo.gguf --type f32 --force
	@echo '$$ idefics2-run -m $(RUN_OUT)/demo.gguf --image $(RUN_IMAGE) -p "$(RUN_PROMPT)"'
	@$(BIN)/idefics2-run -m $(RUN_OUT)/demo.gguf --image $(RUN_IMAGE) -p "$(RUN_PROMPT)" -n 32

# Speed on the real idefics2-8b shapes (synthetic weights, cached): writes the "make bench" section of BENCHMARKS.md.
bench: build
	scripts/bench.sh

# Kernel-level Go benchmarks (mat-vec per CPU variant, batch matmul, quantization, decode-step allocations).
bench-go: ggml-cpu
	IDEFICS2_LIB_DIR=$(GGML_CPU_DIR) $(GO) test -run '^$$' -bench . -benchtime 3x -benchmem ./ggml/ ./quant/ ./graph/

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

# Prints the exports needed to call `go build` / `go test` directly.
env:
	@echo 'export CGO_CPPFLAGS="$(CGO_CPPFLAGS)"'
	@echo 'export IDEFICS2_LIB_DIR="$(GGML_CPU_DIR)"'

# CUDA backend (needs nvcc and the CUDA toolkit): builds libggml-cuda.so into bin/lib, where the binaries find it.
# Architectures: the GPUs of this machine (CMake's "native"); set CUDA_ARCHS=90 (etc.) to build for others.
CUDA_ARCHS ?= native
cuda: build
	cmake -S $(OLLAMA_DIR) -B $(BIN)/cuda-build -DCMAKE_BUILD_TYPE=Release -DGGML_CCACHE=OFF '-DCMAKE_BUILD_RPATH=$$ORIGIN' \
		-DCMAKE_CUDA_ARCHITECTURES=$(CUDA_ARCHS) -DCMAKE_DISABLE_FIND_PACKAGE_Vulkan=ON
	cmake --build $(BIN)/cuda-build --target ggml-cuda -j
	cp -P $(BIN)/cuda-build/lib/ollama/libggml-cuda.so* $(BIN)/cuda-build/lib/ollama/libggml-base.so* $(LIBDIR)/

# The ggml op tests and the HF parity tests on the CUDA backend (after `make cuda`, on a machine with a GPU).
test-cuda: cuda
	IDEFICS2_LIB_DIR=$(CURDIR)/$(LIBDIR) $(GO) test -count=1 -run 'TestOps|TestMulMat' ./ggml/
	IDEFICS2_LIB_DIR=$(CURDIR)/$(LIBDIR) IDEFICS2_TEST_DEVICE=cuda $(GO) test -count=1 -run 'TestParity' ./graph/

# llama.cpp loads our text GGUF and gives the same logits (build tag llamacpp: compiles llama.cpp's core from the
# pinned ollama module once, minutes on 2 cores).
check-llamacpp: ggml-cpu
	CGO_CPPFLAGS="$(CGO_CPPFLAGS) -I$(OLLAMA_DIR)/llama/llama.cpp/include" IDEFICS2_LIB_DIR=$(GGML_CPU_DIR) \
		$(GO) test -tags llamacpp -count=1 -v ./internal/llamacpptest/

clean:
	rm -rf $(BIN)
