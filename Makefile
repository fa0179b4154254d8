# The two commands of the README's quick start:
#   make demo   sets everything up and runs the reference system end to end
#   make test   sets everything up and runs the whole test suite (ruff, mypy, pytest)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck pytest bench clean services node

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,deep,scale,onnx,mlflow]"
	touch $(STAMP)

setup: $(STAMP) services node

# ONNX Runtime for Node.js and ONNX Runtime Web (tests/export run the exported ONNX graphs in Node.js and in a
# headless Chromium page, tools/onnx-web/score.html, served locally: nothing fetched at run time), pinned by the
# package-locks.
node: tools/onnx-node/node_modules/.package-lock.json tools/onnx-web/node_modules/.package-lock.json

tools/onnx-node/node_modules/.package-lock.json: tools/onnx-node/package-lock.json
	cd tools/onnx-node && npm ci --no-audit --no-fund

tools/onnx-web/node_modules/.package-lock.json: tools/onnx-web/package-lock.json
	cd tools/onnx-web && npm ci --no-audit --no-fund

# Debian packages the service tests and benchmarks use (PostgreSQL, Redis, wrk; Chromium + its WebDriver for the
# web UI's browser tests); installed when missing.
services:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	test -x "$$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | head -1)" || missing="$$missing postgresql"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: setup
	$(BIN)/loopml demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

test: setup lint typecheck
	$(BIN)/pytest -q tests

bench: setup
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
