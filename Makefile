# Two entry points do their own set-up: `make demo` and `make test`.
# A virtualenv in .venv gets sesscache built (cffi, against the system OpenSSL) and
# installed in editable mode; it is rebuilt whenever the C side or the metadata change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sesscache-installed
C_SOURCES := pyproject.toml setup.py build_ffi.py $(wildcard _cffi_src/*.py)

.PHONY: demo test bench matrix system-packages clean docs

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
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[test,servers]'
	touch $@

clean:
	rm -rf build dist src/*.egg-info src/sesscache/_sesscache_cffi*.so src/sesscache/_sesscache_cffi.c
