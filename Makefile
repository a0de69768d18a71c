# otel-metrics: every target a fresh clone needs. `make demo` and `make test` are the front door.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install compile demo test lint bench clean

# The venv is rebuilt when the dependencies change; the runtime dependencies are the plugin's
# pinned ones (plugin/requirements.txt), so the tests run exactly what users' machines install.
$(VENV)/.installed: pyproject.toml plugin/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c plugin/requirements.txt -e '.[dev]' --config-settings editable_mode=compat
	touch $@

# Byte-compile the hooks' modules: hooks start fresh each time, and may run where
# PYTHONDONTWRITEBYTECODE keeps Python from caching them itself.
compile: install
	$(PY) -m compileall -q otel_metrics plugin/scripts/run.py

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check otel_metrics tests benchmarks plugin/scripts

# Everything the tests need is built first: the collector (Go) and the Claude Code CLI (npm).
test: install compile lint collector claude-cli
	$(PY) -m pytest -q

demo: install compile
	$(PY) -m otel_metrics.demo

# The hook latency benchmark (the README's table); the others are listed in benchmarks/.
bench: install compile
	$(PY) benchmarks/hook_latency.py

# Session aggregates of a generated 100 MB transcript vs a naive reader (README "Session aggregates").
.PHONY: bench-transcript
bench-transcript: install
	$(PY) benchmarks/transcript_speed.py

clean:
	rm -rf $(VENV) build .cache

# The real Claude Code CLI for tests/acceptance, pinned; a second run only checks the stamp.
# Without npm it is skipped (the acceptance tests then skip and say why), except under CI=true.
CLAUDE_CODE_VERSION := 2.1.197
CLAUDE_CODE_DIR := .cache/claude-code
CLAUDE_CODE_STAMP := $(CLAUDE_CODE_DIR)/.installed-$(CLAUDE_CODE_VERSION)

.PHONY: claude-cli
claude-cli:
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory $(CLAUDE_CODE_STAMP); \
	elif [ "$$CI" = true ]; then echo "claude-cli: npm is required under CI=true" >&2; exit 1; \
	else echo "claude-cli: npm not found, the acceptance tests will be skipped"; fi

$(CLAUDE_CODE_STAMP):
	mkdir -p $(CLAUDE_CODE_DIR)
	npm install --prefix $(CLAUDE_CODE_DIR) --no-audit --no-fund --save-exact \
		@anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)
	@# The package's postinstall puts the native binary in place; npm may skip install scripts, so run it then.
	$(CLAUDE_CODE_DIR)/node_modules/.bin/claude --version || \
		(cd $(CLAUDE_CODE_DIR)/node_modules/@anthropic-ai/claude-code && node install.cjs)
	$(CLAUDE_CODE_DIR)/node_modules/.bin/claude --version
	touch $@

# The OpenTelemetry Collector distribution of collector-config/builder-config.yaml, built
# with the pinned builder (ocb) into build/otelcol-metrics; a second run only compares file
# dates. Go's module and build caches make a rebuild after a manifest change quick.
# Without Go it is skipped (the collector tests then skip and say why), except under CI=true.
OCB_VERSION := v0.165.0
OCB := .cache/ocb-$(OCB_VERSION)/builder
COLLECTOR := build/otelcol-metrics

.PHONY: collector
collector:
	@if command -v go >/dev/null 2>&1; then $(MAKE) --no-print-directory $(COLLECTOR); \
	elif [ "$$CI" = true ]; then echo "collector: Go is required under CI=true" >&2; exit 1; \
	else echo "collector: go not found, the collector tests will be skipped"; fi

$(OCB):
	GOBIN=$(CURDIR)/$(dir $(OCB)) go install go.opentelemetry.io/collector/cmd/builder@$(OCB_VERSION)

$(COLLECTOR): collector-config/builder-config.yaml $(OCB)
	mkdir -p build
	$(OCB) --config=collector-config/builder-config.yaml
	cp build/otelcol-metrics-dist/otelcol-metrics $@
