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
# The Vulkan backend, built by `make vulkan` and cached the same way (scripts/ggml-vulkan.sh); `make build` copies it
# into bin/lib when the cache holds it.
GGML_VULKAN_DIR = $(shell scripts/ggml-vulkan.sh --dir)

RUN_MODEL_DIR := testdata/demo/checkpoint-bf16
RUN_OUT       := $(BIN)/demo
RUN_IMAGE     ?= testdata/demo/images/demo_00.png
RUN_PROMPT    ?= What shape is in the picture?
RUN_DEVICE    ?= auto

.PHONY: all build ggml-cpu test test-isa test-arm64 test-short test-fleet run bench bench-go fmt vet env clean cuda test-cuda check-llamacpp \
	test-browser page-screenshot \
	vulkan test-vulkan test-vulkan-ops metal test-metal cross-darwin

all: build

ggml-cpu:
	@scripts/ggml-cpu-variants.sh >/dev/null

build: ggml-cpu
	@mkdir -p $(LIBDIR)
	@cp -P $(GGML_CPU_DIR)/*.so* $(LIBDIR)/ 2>/dev/null || true
	@[ ! -f $(GGML_VULKAN_DIR)/.complete ] || cp $(GGML_VULKAN_DIR)/libggml-vulkan.so $(LIBDIR)/
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
# x86-64; plus the shared parity check on the p1 fixture cases when the shared checks folder is present, SHARED in the script): scripts/test-arm64.sh.
test-arm64:
	GO=$(GO) scripts/test-arm64.sh

test-short: ggml-cpu
	IDEFICS2_LIB_DIR=$(GGML_CPU_DIR) $(GO) test -short ./...

# Scale-out behind a load balancer (scripts/test-fleet.sh): installs HAProxy when absent, then two serve replicas of
# the demo model behind it take 200 requests with images from 8 clients while one replica is stopped with SIGTERM.
test-fleet:
	GO=$(GO) scripts/test-fleet.sh
# serve's chat page in a real browser (github.com/chromedp/chromedp, build tag browser): installs Debian's chromium when
# no Chromium or Chrome is on PATH (scripts/chromium.sh), then uploads a demo picture, asks the `make run` question and
# waits for "A red circle.", and streams a long answer and stops it.
test-browser: ggml-cpu
	@scripts/chromium.sh
	IDEFICS2_LIB_DIR=$(GGML_CPU_DIR) $(GO) test -tags browser -count=1 -run 'TestBrowser' -v ./cmd/idefics2-run/

# The screenshot of the chat page in docs/usage.md, taken by the browser test.
page-screenshot: ggml-cpu
	@scripts/chromium.sh
	IDEFICS2_PAGE_SCREENSHOT=$(CURDIR)/docs/chat-page.png IDEFICS2_LIB_DIR=$(GGML_CPU_DIR) $(GO) test -tags browser -count=1 -run 'TestBrowserPage$$' ./cmd/idefics2-run/

# The whole path on the small trained demo model shipped in testdata: convert the bf16 checkpoint, then ask about a
# picture (Hugging Face answers "A red circle." for the default question and image).
run: build
	@$(BIN)/idefics2-run info | sed -n '1p;/CPU backend in use/p'
	@mkdir -p $(RUN_OUT)
	@[ -s $(RUN_OUT)/demo.gguf ] && [ -s $(RUN_OUT)/mmproj-demo.gguf ] || \
		$(BIN)/convert --in $(RUN_MODEL_DIR) --out $(RUN_OUT)/demo.gguf --type f32 --force
	@echo '$$ idefics2-run -m $(RUN_OUT)/demo.gguf --image $(RUN_IMAGE) -p "$(RUN_PROMPT)"'
	@$(BIN)/idefics2-run --device $(RUN_DEVICE) -m $(RUN_OUT)/demo.gguf --image $(RUN_IMAGE) -p "$(RUN_PROMPT)" -n 32

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

# Vulkan backend (needs cmake, the Vulkan headers and loader, and glslc; Debian: apt-get install libvulkan-dev glslc):
# builds libggml-vulkan.so once into the cache beside the CPU variants (README.md, "GPU backends": how long it takes),
# then `make build` copies it into bin/lib.
vulkan:
	@scripts/ggml-vulkan.sh >/dev/null
	@$(MAKE) --no-print-directory build

# The ggml op tests and the HF parity tests on the Vulkan backend, then the demo on Vulkan, whose answer must be the
# CPU's. Without a GPU, Mesa's lavapipe (Mesa 25 or later: scripts/lavapipe.sh) is the Vulkan device: a CPU-type device,
# chosen here by --device vulkan. VULKAN_DEVICE=vulkan:1 (etc.) picks another device.
# VULKAN_PARITY selects the parity tests (a go test -run pattern; all of them by default).
VULKAN_DEVICE ?= vulkan
VULKAN_PARITY ?= TestParity
test-vulkan: test-vulkan-ops
	IDEFICS2_LIB_DIR=$(CURDIR)/$(LIBDIR) IDEFICS2_TEST_DEVICE=$(VULKAN_DEVICE) $(GO) test -count=1 -timeout 90m -run '$(VULKAN_PARITY)' ./graph/
	@mkdir -p $(BIN)/demo
	@$(MAKE) --no-print-directory run RUN_DEVICE=$(VULKAN_DEVICE) > $(BIN)/demo/answer-vulkan.txt; \
		st=$$?; cat $(BIN)/demo/answer-vulkan.txt; exit $$st
	@$(MAKE) --no-print-directory run RUN_DEVICE=cpu > $(BIN)/demo/answer-cpu.txt; \
		st=$$?; cat $(BIN)/demo/answer-cpu.txt; exit $$st
	@[ "$$(tail -n 1 $(BIN)/demo/answer-cpu.txt)" = "$$(tail -n 1 $(BIN)/demo/answer-vulkan.txt)" ] || \
		{ echo "test-vulkan: the demo answer on $(VULKAN_DEVICE) differs from the CPU's"; exit 1; }
	@echo "test-vulkan: the demo answer on $(VULKAN_DEVICE) is the CPU's"

# The ggml op tests alone, on every device registered, the Vulkan ones included (seconds on lavapipe; run by .ci/run).
test-vulkan-ops: vulkan
	IDEFICS2_LIB_DIR=$(CURDIR)/$(LIBDIR) IDEFICS2_TEST_DEVICE=$(VULKAN_DEVICE) $(GO) test -count=1 -run 'TestOps|TestMulMat|TestSelectDeviceRules' ./ggml/

# Metal (macOS on Apple Silicon): the binaries carry ggml's Metal backend, with its shader library embedded, compiled
# by cgo from the pinned ollama module (its ggml package adds ggml-metal on darwin/arm64), so `make metal` builds them
# and checks that a Metal device registers. Not yet run on a Mac.
metal:
	@[ "$$(uname -s)/$$(uname -m)" = "Darwin/arm64" ] || { echo "make metal: needs macOS on Apple Silicon (this is $$(uname -s)/$$(uname -m))"; exit 2; }
	@$(MAKE) --no-print-directory build
	$(BIN)/idefics2-run info --device metal

# The ggml op tests and the HF parity tests on Metal, then the demo on Metal (after `make metal`, on a Mac).
test-metal: metal
	IDEFICS2_LIB_DIR=$(CURDIR)/$(LIBDIR) IDEFICS2_TEST_DEVICE=metal $(GO) test -count=1 -run 'TestOps|TestMulMat|TestSelectDeviceRules' ./ggml/
	IDEFICS2_LIB_DIR=$(CURDIR)/$(LIBDIR) IDEFICS2_TEST_DEVICE=metal $(GO) test -count=1 -timeout 30m -run 'TestParity' ./graph/
	@$(MAKE) --no-print-directory run RUN_DEVICE=metal

# The pure-Go packages built and vetted for darwin/arm64 with cgo off (scripts/cross-darwin.sh).
cross-darwin:
	scripts/cross-darwin.sh

# llama.cpp loads our text GGUF and gives the same logits (build tag llamacpp: compiles llama.cpp's core from the
# pinned ollama module once, minutes on 2 cores).
check-llamacpp: ggml-cpu
	CGO_CPPFLAGS="$(CGO_CPPFLAGS) -I$(OLLAMA_DIR)/llama/llama.cpp/include -I$(OLLAMA_DIR)/llama/llama.cpp/tools/mtmd" IDEFICS2_LIB_DIR=$(GGML_CPU_DIR) \
		$(GO) test -tags llamacpp -count=1 -v ./internal/llamacpptest/

clean:
	rm -rf $(BIN)
