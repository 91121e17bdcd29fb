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

# tch/torch-sys find libtorch through the venv's torch package.
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(VENV)/bin:$(PATH)

.PHONY: all setup build header lint fixtures test test-rust test-cpp test-python demo clean distclean

all: build

# The venv with libtorch (torch 2.11.0), cmake and pytest. Re-runs only when
# requirements-dev.txt changes.
setup: $(VENV)/.perfopt-setup
$(VENV)/.perfopt-setup: requirements-dev.txt
	@command -v cargo >/dev/null || { echo "perfopt needs a Rust toolchain (cargo): https://rustup.rs"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# The library, the CLI, and a staged copy in build/ (lib/libperfopt.so.0 with
# its SONAME, the libperfopt.so link, the header, the CLI).
build: setup
	cargo build $(CARGO_FLAGS)
	mkdir -p $(BUILD)/lib $(BUILD)/bin $(BUILD)/include
	cp -f target/release/libperfopt.so $(BUILD)/lib/libperfopt.so.0
	ln -sf libperfopt.so.0 $(BUILD)/lib/libperfopt.so
	cp -f target/release/libperfopt.a $(BUILD)/lib/
	cp -f target/release/perfopt $(BUILD)/bin/
	cp -f include/perfopt.h $(BUILD)/include/

# Regenerates include/perfopt.h from src/ffi (build.rs writes it to OUT_DIR).
header: setup
	cargo build $(CARGO_FLAGS) --lib
	cp -f "$$(ls -t target/release/build/perfopt-*/out/perfopt.h | head -n 1)" include/perfopt.h
	@echo "include/perfopt.h regenerated"

lint: setup
	cargo fmt --all -- --check
	cargo clippy $(CARGO_FLAGS) --all-targets -- -D warnings

test-rust: setup
	cargo test $(CARGO_FLAGS)

# The C/C++ harness: the header alone as C11 and C++17 with -Werror, then the
# library driven through every function (CMake + ctest).
fixtures: setup
	test -f $(BUILD)/fixtures/manifest.json || $(VENV)/bin/python tests/fixtures/make_fixtures.py $(BUILD)/fixtures

test-cpp: build fixtures
	cmake -S tests/cpp -B $(BUILD)/tests-cpp -DPERFOPT_ROOT=$(ROOT) -DPERFOPT_FIXTURES=$(BUILD)/fixtures \
		-DPERFOPT_DLPACK_INCLUDE="$$($(VENV)/bin/python -c 'import torch.utils.cpp_extension as c; print(c.include_paths()[0])')" \
		-DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build $(BUILD)/tests-cpp -j 2
	ctest --test-dir $(BUILD)/tests-cpp --output-on-failure

test-python: build fixtures
	PERFOPT_FIXTURES=$(BUILD)/fixtures PERFOPT_LIBRARY=$(BUILD)/lib/libperfopt.so PYTHONPATH=$(ROOT)/bindings/python \
		$(VENV)/bin/python -m pytest -q tests/python

test: build lint test-rust test-cpp test-python
	@echo "make test: every suite passed"

# The main job: what the optimizer detects and applies, then two small models
# exported with the venv's PyTorch (no download) measured in every compile mode.
demo: build
	$(BUILD)/bin/perfopt info
	$(VENV)/bin/python tests/fixtures/make_fixtures.py $(BUILD)/demo --batch 4 --only vocoder,encoder
	$(BUILD)/bin/perfopt bench $(BUILD)/demo/vocoder.pt --input 4x80x32 --json $(BUILD)/demo/vocoder.bench.json
	$(BUILD)/bin/perfopt bench $(BUILD)/demo/encoder.pt --input 4x16x64 --json $(BUILD)/demo/encoder.bench.json

clean:
	rm -rf $(BUILD)
	cargo clean

distclean: clean
	rm -rf $(VENV)
