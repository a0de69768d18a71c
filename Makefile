# otel-metrics: every target a fresh clone needs. `make demo` and `make test` are the front door.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install demo test lint bench clean

# The venv is rebuilt when the dependencies change.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $@

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check otel_metrics tests benchmarks plugin

test: install lint
	$(PY) -m pytest -q

demo: install
	$(PY) -m otel_metrics.demo

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
