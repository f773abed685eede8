# The README's two commands: `make run` and `make test`. Each sets itself up.
SHELL := /bin/bash
# The interpreter the virtualenv is made from: the system's /usr/bin/python3 when it is
# 3.11 or newer and can make a virtualenv, else python3 from PATH. Debian's is linked
# statically and runs this code ~7-10% faster than a --enable-shared build such as pyenv's
# (docs/performance.md, "The virtualenv's interpreter"); the container image's is the
# official optimised build. `make clean` and PYTHON=... to choose another.
ifndef PYTHON
PYTHON := $(shell for p in /usr/bin/python3 python3; do \
  $$p -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  && { echo $$p; exit; }; done; echo python3)
endif
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SPECS := .cache/asyncapi-specs/node_modules/@asyncapi/specs/schemas/3.0.0.json
PYTEST_ARGS ?=
# The integration tests mostly wait (on rebalance timeouts, workers starting, tasks coming
# out); the unit tests keep a core busy. Four pytest processes, each with its own Tansu and
# Redis, take 8-10 minutes on 2 cores (about 800 CPU-seconds of tests in all); a file's
# tests stay in one process (--dist loadfile), so a module's servers start once.
# PYTEST_WORKERS=0 runs it serially.
PYTEST_WORKERS ?= 4

.PHONY: run test soak lint typecheck pytest schemas clean help lock redis-server prometheus stunnel

help:
	@echo "make run    - detector on an embedded broker + Redis, with a sample stream"
	@echo "make test   - lint, type-check and the whole test suite (what CI runs)"
	@echo "make soak   - long fault runs and throughput figures (~10 min; not in make test)"
	@echo "make schemas- regenerate schemas/ from the models"
	@echo "make clean  - remove the virtualenv and caches"
	@echo "make lock   - resolve pyproject.toml afresh into constraints.txt (then make test)"

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed; set PYTHON=python3.11")'
	@echo "installing moments and its dependencies into $(VENV): pip is quiet, and the first time takes a few minutes"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

redis-server:
	@if ! command -v redis-server >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing redis-server (Debian package)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is missing: run 'sudo apt-get install -y redis-server', or set MOMENTS_TEST_REDIS_URL"; exit 1; \
	  fi; \
	fi

# promtool and prometheus (Debian package) for the alert-rule and dashboard tests.
prometheus:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing prometheus (Debian package)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else \
	    echo "prometheus is missing: run 'sudo apt-get install -y --no-install-recommends prometheus' (its tests are skipped without it)"; \
	  fi; \
	fi

# stunnel (Debian package) puts a mutual-TLS listener in front of Tansu, which cannot
# listen in TLS itself, for the Kafka TLS tests (tests/integration/test_kafka_tls.py).
stunnel:
	@if ! command -v stunnel4 >/dev/null && ! command -v stunnel >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing stunnel4 (Debian package)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends stunnel4 >/dev/null; \
	  else \
	    echo "stunnel is missing: run 'sudo apt-get install -y stunnel4' (the Kafka TLS tests are skipped without it)"; \
	  fi; \
	fi

$(SPECS):
	@command -v npm >/dev/null || { echo "npm is needed for the AsyncAPI schema check: apt-get install -y npm"; exit 1; }
	npm install --silent --no-audit --no-fund --prefix .cache/asyncapi-specs @asyncapi/specs@6

# 130 is how `moments run` ends after Ctrl-C (docs: "the exit code is 130 after Ctrl-C"):
# not a failure, so not make's `*** [Makefile:NN: run] Error 130`. Any other code fails.
run: $(STAMP) redis-server
	@$(BIN)/moments run $(ARGS) || { code=$$?; [ $$code -eq 130 ] || exit $$code; }

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

typecheck: $(STAMP)
	$(BIN)/mypy

# src byte-compiled first: where PYTHONDONTWRITEBYTECODE is set, every Python process the
# suite starts (pytest's own, each worker and command a test runs) compiled it afresh.
# pytest runs with it unset: each worker collects every test file, and pytest keeps the
# files with their asserts rewritten only where it may write bytecode; without that cache
# each worker rewrote all of them again (~12 of its ~20 CPU-s of collection), every run.
pytest: $(STAMP) redis-server prometheus stunnel $(SPECS)
	$(BIN)/python -m compileall -q src
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test: lint typecheck pytest

# Long fault sequences under load, poison and scale-out throughput (pytest marker
# `soak`, left out of `make test`), then the benchmark with two workers against one.
# SOAK_EVENTS, SOAK_RATE and SOAK_STEP_SECONDS size the runs.
soak: $(STAMP) redis-server
	$(BIN)/python -m pytest -m soak tests/soak $(PYTEST_ARGS)
	$(BIN)/moments bench --events 600000 --subscribers 20000 --partitions 8 --workers 2

schemas: $(STAMP)
	$(BIN)/moments schemas export

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache .hypothesis

# The newest versions pyproject.toml admits, resolved in a throw-away virtualenv.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ echo '# Every package moments and its dev tools install, at the versions tested together'; \
	  echo "# (pip's constraints: \`pip install -c constraints.txt ...\`; the Makefile and the image use"; \
	  echo '# it). Regenerate after changing pyproject.toml'"'"'s dependencies: make lock'; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable; } > constraints.txt
	rm -rf .lock-venv
