# ww_assets — fresh-machine entry points. Every target creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WW_HOME ?= .ww
export WW_HOME
DAGSTER_HOME := $(abspath $(WW_HOME))/dagster
export DAGSTER_HOME
DEMO_DAYS ?= 3
DEMO_TAGS ?= 150
DEV_PORT ?= 3000

.PHONY: install demo dev test test-old-clickhouse e2e-browser bench bench-full bench-sync bench-read clean

$(BIN)/ww: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/ww

install: $(BIN)/ww

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

## demo: an emulated plant, its catalog, the last DEMO_DAYS days backfilled through Dagster, status
demo: install $(DAGSTER_HOME)/dagster.yaml
	@test -f $(WW_HOME)/historian.sqlite || $(BIN)/ww simulate create --days $(DEMO_DAYS) --tags $(DEMO_TAGS)
	$(BIN)/ww simulate extend
	$(BIN)/ww backfill --days $(DEMO_DAYS)
	$(BIN)/ww status

## dev: the Dagster UI on http://localhost:$(DEV_PORT) with embedded defaults; the emulated plant runs live meanwhile
# dagster dev runs in DAGSTER_HOME (where the copy of dagster.yaml is, so it does not warn that
# the repository's dagster.yaml is unused); workspace.yaml's paths are relative to the file.
# Without WONDERWARE_HOST the emulated plant produces points in real time (`ww simulate live`)
# as long as the UI runs, and stops with it.
dev: install $(DAGSTER_HOME)/dagster.yaml
	@test -n "$$WONDERWARE_HOST" || test -f $(WW_HOME)/historian.sqlite || $(BIN)/ww simulate create --days $(DEMO_DAYS) --tags $(DEMO_TAGS)
	@set -e; live=; \
	if [ -z "$$WONDERWARE_HOST" ]; then \
	  $(BIN)/ww simulate live >$(WW_HOME)/simulate-live.log 2>&1 & live=$$!; \
	  echo "emulated plant live (log: $(WW_HOME)/simulate-live.log)"; \
	fi; \
	trap '[ -z "$$live" ] || kill $$live 2>/dev/null || true' EXIT; trap 'exit 130' INT TERM; \
	cd $(DAGSTER_HOME) && WW_HOME=$(abspath $(WW_HOME)) PYTHONWARNINGS='ignore:Function `dev_command` is superseded' \
	  $(abspath $(BIN))/dagster dev -w $(abspath workspace.yaml) -p $(DEV_PORT)

## test: the whole suite (the browser check is `make e2e-browser`)
test: install
	$(BIN)/pytest -q -p no:cacheprovider -m "not browser and not old_clickhouse"

## test-old-clickhouse: the version gate against Debian's ClickHouse 18.16 server, fetched with apt-get into $(WW_HOME)/cache
OLD_CLICKHOUSE := $(abspath $(WW_HOME))/cache/clickhouse-18.16
test-old-clickhouse: install
	bash ww_assets_tests/fetch_old_clickhouse.sh $(OLD_CLICKHOUSE)
	WW_OLD_CLICKHOUSE=$(OLD_CLICKHOUSE) $(BIN)/pytest -q -p no:cacheprovider -m old_clickhouse ww_assets_tests/test_old_clickhouse.py

## e2e-browser: a newcomer's walk through the UI in headless Chromium (Debian's chromium); screenshots in .ww/artifacts/e2e-browser/
e2e-browser: install
	@command -v chromium >/dev/null || { echo "e2e-browser needs Debian's chromium: apt-get install -y chromium" >&2; exit 1; }
	$(BIN)/pip install --quiet -e '.[test,browser]'
	$(BIN)/pytest -q -p no:cacheprovider -m browser ww_assets_tests/test_e2e_ui.py

## bench: throughput of ww_assets against a bare copy and the replaced system's row path
bench: install
	$(BIN)/python -m bench.run

## bench-full: the same on one backfill run of the size the defaults make (a 50-tag chunk × 31 days at 1 s: 134M rows, ~15 GB in /tmp)
bench-full: install
	BENCH_TAGS=50 BENCH_CHUNK_SIZE=50 BENCH_DAYS=31 $(BIN)/python -m bench.run

## bench-sync: the historian load of a day of operation at 1,500 tags (sync a minute apart, late bursts, refresh, reconciliation) and of adding one tag to 2 years
bench-sync: install
	$(BIN)/python -m bench.sync_day

## bench-read: readers' price of one row per point (the views read FINAL) on a 100M-row table, unmerged after reloads and merged; figures in $(WW_HOME)/artifacts/bench-read.json
bench-read: install
	$(BIN)/python -m bench.read_path

clean:
	rm -rf $(WW_HOME) .pytest_cache
