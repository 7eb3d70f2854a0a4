# snapshotter: `make demo` runs the main job on SQLite, `make test` passes the tests.
PYTHON ?= python3
# `make bench BENCH_ARGS="--only recompute --only load"` runs parts of the benchmark (scripts/bench.py --help).
BENCH_ARGS ?=
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DB   ?= sqlite:///demo.db
# The sample prices shipped in the package end on this trading day.
DEMO_DATE ?= 2026-11-24
DEMO_FROM ?= 2025-11-24
SNAP   := $(BIN)/snapshotter --database-url $(DEMO_DB) --log-format console

LOCK   := requirements.lock

.PHONY: install demo test bench lock clean

install: $(STAMP)

# The versions come from the lock (-c: constraints), as in the image; pyproject.toml
# says what is needed, requirements.lock at which version.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -c 'import sys; sys.exit("snapshotter needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[test]'
	touch $(STAMP)

# Refresh the lock after changing dependencies in pyproject.toml, or to take new
# releases (README "Reproducible images"): every version resolved anew for
# Python 3.11 on any platform, the runtime and test dependencies and the build backend.
lock:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 --upgrade --extra test \
	    pyproject.toml scripts/build-requirements.in -o $(LOCK)

demo: install
	rm -f demo.db demo.db-wal demo.db-shm demo.db.lock demo.db.symbol_batch.lock
	$(SNAP) db upgrade
	$(SNAP) load --sample
	$(SNAP) symbol-batch --from $(DEMO_FROM) --to $(DEMO_DATE)
	$(SNAP) portfolio-refresh --date $(DEMO_DATE) --wait-timeout 1m
	$(SNAP) snapshots

test: install
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

bench: install
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo.db demo.db-wal demo.db-shm demo.db.lock demo.db.symbol_batch.lock .pytest_cache .hypothesis
