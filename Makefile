# apop: convenience targets over the CMake presets (see CMakePresets.json).
#   make demo    install deps, build (release), run a demo server on 127.0.0.1:$(PORT)
#   make test    install deps, build (dev), run every test through ctest
#                (PRESET=asan: the same build and suite under ASan+UBSan)
#   make unit    build the unit-test binaries (no `apop`, no deps check) and run
#                the unit tests alone: ctest -L unit, the GoogleTest cases and
#                the layer checks (tests/layers/); 667 tests in 23-46 s on the
#                shared 2-core dev machine, binaries up to date (under a minute)
#   make asan    = make test PRESET=asan (g++, halting on the first report)
#   make fuzz    build the libFuzzer targets (clang 14) and run each for
#                $(FUZZ_SECONDS) s, $(FUZZ_JOBS) at a time (scripts/fuzz.sh)
#   make bench   install deps (Dovecot too), build (release), compare apop with Dovecot
#   make deb     install deps, build the Debian package build/deb/apop_VERSION_ARCH.deb
#                (debian/, dpkg-buildpackage -b) and check it with lintian
#                (scripts/deb-build.sh; docs/operations.md)
PORT ?= 1110
PRESET ?= dev
JOBS ?= 2
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 1
CLANG_FORMAT ?= $(shell command -v clang-format-14 || command -v clang-format || echo clang-format-14)
FORMAT_DIRS := src tests fuzz bench

.PHONY: all deps build test unit asan fuzz release demo bench deb format clean

all: build

deps:
	bash scripts/deps.sh

build: deps
	cmake --preset $(PRESET)
	cmake --build --preset $(PRESET) -j$(JOBS)

test: build
	ctest --preset $(PRESET) --output-on-failure -j$(JOBS)

unit:
	cmake --preset $(PRESET)
	cmake --build --preset $(PRESET) -j$(JOBS) --target unit_tests
	ctest --preset $(PRESET) -L unit -j$(JOBS)

asan:
	$(MAKE) test PRESET=asan

fuzz: deps
	cmake --preset fuzz
	cmake --build --preset fuzz -j$(JOBS)
	FUZZ_NO_BUILD=1 FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) bash scripts/fuzz.sh

release: deps
	cmake --preset release
	cmake --build --preset release -j$(JOBS)

demo: release
	PORT=$(PORT) APOP=build/release/apop bash scripts/demo.sh

bench:
	bash bench/compare.sh $(BENCH_ARGS)

deb: deps
	JOBS=$(JOBS) bash scripts/deb-build.sh

format:
	find $(FORMAT_DIRS) -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' -o -name '*.cc' \) \
	  -print0 | xargs -0 -r $(CLANG_FORMAT) -i

clean:
	rm -rf build
