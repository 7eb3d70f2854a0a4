# snapshotter: `make demo` runs the main job on SQLite, `make test` passes the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DB   ?= sqlite:///demo.db
# The sample prices shipped in the package end on this trading day.
DEMO_DATE ?= 2026-11-24
DEMO_FROM ?= 2025-11-24
SNAP   := $(BIN)/snapshotter --database-url $(DEMO_DB) --log-format console

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("snapshotter needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

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
	$(BIN)/python scripts/bench.py

clean:
	rm -rf $(VENV) demo.db demo.db-wal demo.db-shm demo.db.lock demo.db.symbol_batch.lock .pytest_cache .hypothesis
