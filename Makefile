# turnlog: `make demo` and `make test` set everything up from a bare machine (Python, Rust, pip).
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
PY := $(VENV)/bin/python
# Cargo's target dir is kept between runs (CI caches it) so rebuilds are incremental.
export CARGO_TARGET_DIR ?= $(CURDIR)/target
# Pinned for the demo and benchmark corpora so runs are comparable.
BENCH_MESSAGES ?= 1000000

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

.PHONY: install
install: $(VENV)/.installed ## create .venv with the dev tools

.PHONY: build-dev
build-dev: install ## build the extension (debug) into .venv
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV)/bin/maturin develop --quiet

.PHONY: build-release
build-release: install ## build the extension (release, LTO) into .venv, for benchmarks and the demo
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV)/bin/maturin develop --quiet --release

.PHONY: test-rust
test-rust: ## Rust unit tests of the core
	cargo test --quiet

# The Redis backend's tests start real servers (tests/redis_server.py): install the Debian package
# when they are missing (as root); otherwise say so, and fail under CI, where they must run.
.PHONY: redis-server
redis-server: ## install redis-server and redis-cli (Debian package) if missing, for the Redis tests
	@if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	  else \
	    echo "redis-server/redis-cli missing: run 'sudo apt-get install redis-server'" \
	      "(without them the Redis tests skip, or fail when CI is set)" >&2; \
	    [ -z "$${CI:-}" ]; \
	  fi; \
	fi

.PHONY: test-python
test-python: build-dev redis-server ## the Python suite, against the Rust and the pure store, then as the pure fallback
	$(PY) -m pytest
	TURNLOG_PURE=1 $(PY) -m pytest -q

# The frameworks' own session and history tests (openai-agents, langchain-core,
# langchain-community sdists, pinned) on turnlog's adapters, over every backend: tests/peers.
# Their test dependencies go to an overlay venv in the cache, never into .venv.
.PHONY: test-peers
test-peers: build-dev redis-server ## the frameworks' own test suites on turnlog's adapters (downloads their sdists)
	$(PY) tests/peers/run.py

.PHONY: test
test: test-rust test-python test-peers ## set up, build, and run every test (Rust, Python, the frameworks' suites)

.PHONY: lint
lint: build-dev ## rustfmt, clippy, ruff, mypy --strict, stubtest (against the built module)
	cargo fmt --check
	cargo clippy --all-targets --features python -- -D warnings
	$(VENV)/bin/ruff check python tests benches tools
	$(VENV)/bin/ruff format --check python tests benches tools
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest turnlog._native

.PHONY: format
format: install ## apply rustfmt and ruff format
	cargo fmt
	$(VENV)/bin/ruff format python tests benches
	$(VENV)/bin/ruff check --fix python tests benches

.PHONY: demo
demo: build-release ## build a corrupt-laden session and show load and tail read, Rust vs pure; then the CLI
	$(PY) benches/demo.py
	@echo; echo "== The same workspace through the turnlog command =="
	$(VENV)/bin/turnlog -w demo-workspace append telegram_user123 --role user --content "Still there?"
	@echo '{"role":"assistant","content":"Yes!"}' | $(VENV)/bin/turnlog -w demo-workspace append telegram_user123
	@echo "(a crash and a stray tool damage the session: a garbage line and a torn record)"
	@printf 'ERROR connection reset\n{"role":"assistant","content":"I was cut sh' \
		>> demo-workspace/sessions/telegram_user123.jsonl
	$(VENV)/bin/turnlog -w demo-workspace ls
	$(VENV)/bin/turnlog -w demo-workspace doctor telegram_user123 || true
	$(VENV)/bin/turnlog -w demo-workspace show telegram_user123 --tail 2
	$(VENV)/bin/turnlog -w demo-workspace compact --all
	$(VENV)/bin/turnlog -w demo-workspace doctor
	$(VENV)/bin/turnlog bench --messages 50000

.PHONY: bench
bench: build-release ## the benchmarks (1M-message corpus) and the ratio table
	$(PY) benches/compare.py --messages $(BENCH_MESSAGES)
	$(PY) benches/bench_concurrency.py
	TURNLOG_BENCH_MESSAGES=$(BENCH_MESSAGES) $(PY) -m pytest benches --benchmark-only \
		--benchmark-columns=median,iqr,rounds -p no:cacheprovider

.PHONY: bench-peers
bench-peers: build-release ## turnlog vs LangChain and OpenAI Agents session stores (installs them into .venv)
	$(PY) -m pip install --quiet -r benches/requirements-peers.txt
	$(PY) benches/bench_peers.py

.PHONY: bench-redis
bench-redis: build-release ## append and load(limit=50) against a local Redis, next to JSONL and SQLite
	$(PY) benches/bench_redis.py

# The x86_64 Linux wheel is manylinux2014 (glibc 2.17), so that it installs on Debian 11, Ubuntu
# 20.04, RHEL 8 and Amazon Linux 2 too: zig (PyPI's ziglang, in the venv, found on PATH) links it
# against glibc 2.17's symbols, and `auditwheel show` prints the tag the wheel really earns. The
# other platforms' wheels come from .github/workflows/release.yml (docs/RELEASING.md).
WHEEL_COMPAT ?= manylinux2014
WHEEL_PLATFORM ?= manylinux_2_17_x86_64

.PHONY: wheel
wheel: install ## build the manylinux2014 abi3 wheel and the sdist into dist/; smoke-test both, each in a fresh venv
	rm -f dist/turnlog-*
	# The wheel is built from the unpacked sdist, whose files carry the sdist's fixed, old times:
	# against a kept target dir, cargo would take the crate as unchanged and ship a stale build.
	# Only turnlog itself is cleaned; its dependencies stay built.
	cargo clean --quiet --release --target $(shell uname -m)-unknown-linux-gnu -p turnlog
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/maturin build --release --sdist \
		--zig --compatibility $(WHEEL_COMPAT) -o dist -i $(PY)
	$(VENV)/bin/auditwheel show dist/turnlog-*.whl
	TURNLOG_WHEEL_TEST=1 TURNLOG_WHEEL="$$(ls dist/turnlog-*.whl)" TURNLOG_SDIST="$$(ls dist/turnlog-*.tar.gz)" \
		TURNLOG_WHEEL_PLATFORM=$(WHEEL_PLATFORM) $(PY) -m pytest tests/test_wheel.py -q -p no:cacheprovider

.PHONY: clean
clean: ## remove build output and the venv
	rm -rf $(VENV) target dist .pytest_cache .hypothesis .mypy_cache .ruff_cache

# --- reliability: docs/RELIABILITY.md ------------------------------------------------------------
# The short versions run in `make test`; these are the long ones.
TURNLOG_TORTURE_KILLS ?= 10000
TURNLOG_LOCK_COMPACTIONS ?= 10000
FUZZ_SECONDS ?= 600
# cargo fuzz builds with its own flags: keep its output apart from the extension's.
FUZZ_CARGO := CARGO_TARGET_DIR=$(CURDIR)/fuzz/target cargo +nightly fuzz run

.PHONY: torture
torture: build-release ## long kill torture (TURNLOG_TORTURE_KILLS kills) and 10,000 compactions under appends
	$(PY) tests/_torture.py --kills $(TURNLOG_TORTURE_KILLS)
	TURNLOG_LOCK_COMPACTIONS=$(TURNLOG_LOCK_COMPACTIONS) $(PY) -m pytest -q -s -p no:cacheprovider \
		tests/test_locks.py::test_many_compactions_under_concurrent_appends

.PHONY: fuzz
fuzz: build-release ## cargo fuzz (line parser, keys), then Hypothesis on load, Rust vs pure: FUZZ_SECONDS each
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	mkdir -p fuzz/corpus/parse fuzz/corpus/keys
	cd fuzz && $(FUZZ_CARGO) parse corpus/parse seeds/parse -- \
		-max_total_time=$(FUZZ_SECONDS) -dict=parse.dict -print_final_stats=1
	cd fuzz && $(FUZZ_CARGO) keys corpus/keys seeds/keys -- \
		-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1
	$(PY) fuzz/fuzz_load.py --seconds $(FUZZ_SECONDS)
