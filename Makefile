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

# Style, formatting and types (mypy strict over otel_metrics/, configured in pyproject.toml).
lint: install
	$(PY) -m ruff check otel_metrics tests benchmarks tools plugin/scripts
	$(PY) -m ruff format --check otel_metrics tests benchmarks tools plugin/scripts
	$(PY) -m mypy

# Everything the tests need is built or installed first: the collector, Prometheus and Jaeger (Go),
# the Claude Code CLI (npm), PostgreSQL and Chromium (Debian packages).
test: install compile lint collector claude-cli prometheus jaeger postgres chromium
	$(PY) -m pytest -q

demo: install compile
	$(PY) tools/demo.py

# The hook latency benchmark (the README's table); the others are listed in benchmarks/.
bench: install compile
	$(PY) benchmarks/hook_latency.py

# Session aggregates of a generated 100 MB transcript vs a naive reader (README "Session aggregates").
.PHONY: bench-transcript
bench-transcript: install
	$(PY) benchmarks/transcript_speed.py

clean:
	rm -rf $(VENV) build .cache

# $(call with_tool,TOOL,TARGET,WHAT): make TARGET when TOOL is on PATH; without it, say that WHAT
# will be skipped, or fail under CI=true (the tests must run there).
define with_tool
	@if command -v $(1) >/dev/null 2>&1; then $(MAKE) --no-print-directory $(2); \
	elif [ "$$CI" = true ]; then echo "$@: $(1) is required under CI=true" >&2; exit 1; \
	else echo "$@: $(1) not found, $(3) will be skipped"; fi
endef

# $(call debian_package,PACKAGE,CHECK,WHAT): install PACKAGE with apt-get unless the shell command
# CHECK succeeds; where that cannot be done (no apt-get, not root), say that WHAT will be skipped,
# or fail under CI=true.
define debian_package
	@if $(2) >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null && $(2); \
	elif [ "$$CI" = true ]; then echo "$@: the Debian package $(1) is required under CI=true" >&2; exit 1; \
	else echo "$@: $(1) is not installed (apt-get install $(1)), $(3) will be skipped"; fi
endef

# The real Claude Code CLI for tests/acceptance, pinned; a second run only checks the stamp.
# Without npm it is skipped (the acceptance tests then skip and say why), except under CI=true.
CLAUDE_CODE_VERSION := 2.1.197
CLAUDE_CODE_DIR := .cache/claude-code
CLAUDE_CODE_STAMP := $(CLAUDE_CODE_DIR)/.installed-$(CLAUDE_CODE_VERSION)

.PHONY: claude-cli
claude-cli:
	$(call with_tool,npm,$(CLAUDE_CODE_STAMP),the acceptance tests)

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
	$(call with_tool,go,$(COLLECTOR),the collector tests)

$(OCB):
	GOBIN=$(CURDIR)/$(dir $(OCB)) go install go.opentelemetry.io/collector/cmd/builder@$(OCB_VERSION)

$(COLLECTOR): collector-config/builder-config.yaml $(OCB)
	mkdir -p build
	$(OCB) --config=collector-config/builder-config.yaml
	cp build/otelcol-metrics-dist/otelcol-metrics $@

# Prometheus and Jaeger for tests/stack, built from the Go module proxy at the releases
# docker-compose.yml runs (its image tags; tests/test_compose.py checks they agree). Each build
# ends in a stamp named by the version; a second run only checks it. Go's caches make a
# rebuild quick; the first build of each takes minutes (README "The stack, proven").
PROMETHEUS_VERSION := 3.16.0
PROMETHEUS_MODULE_VERSION := v0.316.0
PROMETHEUS := build/prometheus
PROMETHEUS_STAMP := build/.prometheus-$(PROMETHEUS_VERSION)
# Jaeger v2 is tagged both v2.x and v1.(x+63) upstream; the Go module carries the v1 tag.
# deploy/jaeger/go.mod pins cmd/jaeger (a tool dependency) and, with go.sum, everything it links.
JAEGER_VERSION := 2.13.0
JAEGER := build/jaeger
JAEGER_STAMP := build/.jaeger-$(JAEGER_VERSION)
GO_BUILD := CGO_ENABLED=0 go build -trimpath

.PHONY: prometheus jaeger postgres chromium stack-test report-test
prometheus:
	$(call with_tool,go,$(PROMETHEUS_STAMP),the stack tests)

jaeger:
	$(call with_tool,go,$(JAEGER_STAMP),the stack tests)

$(PROMETHEUS_STAMP):
	mkdir -p build
	@# `go install` builds the module at its tag with its own go.mod and go.sum; -ldflags names the version.
	GOBIN=$(CURDIR)/build/.prometheus-bin go install -trimpath \
		-ldflags "-X github.com/prometheus/common/version.Version=$(PROMETHEUS_VERSION)" \
		github.com/prometheus/prometheus/cmd/prometheus@$(PROMETHEUS_MODULE_VERSION)
	mv build/.prometheus-bin/prometheus $(PROMETHEUS)
	rmdir build/.prometheus-bin
	$(PROMETHEUS) --version | head -1
	touch $@

$(JAEGER_STAMP): deploy/jaeger/go.mod deploy/jaeger/go.sum
	mkdir -p build
	cd deploy/jaeger && $(GO_BUILD) -o $(CURDIR)/$(JAEGER) \
		-ldflags "-X github.com/jaegertracing/jaeger/internal/version.latestVersion=v$(JAEGER_VERSION)" \
		github.com/jaegertracing/jaeger/cmd/jaeger
	@$(JAEGER) version 2>/dev/null; echo
	touch $@

# Debian's packages: PostgreSQL (the endpoint's shared store, started by the tests as a
# non-root user) and Chromium (renders the report's HTML page headless).
postgres:
	$(call debian_package,postgresql,ls /usr/lib/postgresql/*/bin/initdb,the PostgreSQL tests)

chromium:
	$(call debian_package,chromium,command -v chromium,the report's browser test)

# `otel-metrics report` on a million events, SQLite and PostgreSQL (README "The maintainers' report").
.PHONY: bench-report
bench-report: install postgres
	$(PY) benchmarks/report_speed.py --postgres

# The stack alone (collector + Prometheus + Jaeger + forwarder + endpoint), and the report alone.
stack-test: install collector prometheus jaeger
	$(PY) -m pytest -q -m stack

report-test: install postgres chromium
	$(PY) -m pytest -q tests/test_store.py tests/test_report.py tests/test_report_html.py
