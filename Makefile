# Patron's tasks. `make help` lists them.

SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
# The PostgreSQL database tests use (each test makes its own schema or database inside it).
PATRON_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
export PATRON_TEST_DATABASE_URL
PG_HOST ?= 127.0.0.1
PG_PORT ?= 5432

# A Kafka-compatible broker for the real-broker test suite and the ingest benchmark: tansu, built
# from crates.io once into TOOLS_DIR (about 10 minutes on 2 cores) and reused afterwards.
TOOLS_DIR ?= $(HOME)/.cache/patron/tools
TANSU := $(TOOLS_DIR)/bin/tansu
TANSU_VERSION ?= 0.6.0
BROKER ?= 127.0.0.1:19092
BROKER_PID := target/tansu.pid

# The domain crate must stay free of infrastructure.
DOMAIN_FORBIDDEN := tokio sqlx tonic prost rdkafka

.PHONY: help
help: ## List the targets
	@echo "Patron — make targets:"
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

.PHONY: run
run: ## Run the whole flow on the embedded default (SQLite in ./data, embedded Kafka, demo traffic, ingest, projector, relay, gRPC API on 127.0.0.1:50051); Ctrl-C stops
	$(CARGO) build -p patron
	./target/debug/patron dev

.PHONY: check-histories
check-histories: ## After `make run`: check the demo's stage histories against its events (inactivity transitions contradicted by a purchase, histories that differ from the event-time fold: both must be 0)
	$(CARGO) build -p patron
	./target/debug/patron check-histories

.PHONY: build
build: ## Build every crate
	$(CARGO) build --workspace --all-targets

.PHONY: test
test: postgres ## Run the whole test suite: SQLite, the local PostgreSQL, the Kafka mock cluster, (when it can be built) a real broker, and a Python grpcio client
	$(CARGO) build -p patron
	@-$(MAKE) --no-print-directory broker-binary
	@set -e; \
	if [ -x "$(TANSU)" ] && $(MAKE) --no-print-directory broker-start; then \
		trap '$(MAKE) --no-print-directory broker-stop' EXIT; \
		echo "==> real-broker suite: ON (tansu on $(BROKER))"; \
		PATRON_TEST_KAFKA_BROKERS=$(BROKER) $(CARGO) test --workspace; \
	else \
		echo "==> real-broker suite: SKIPPED (no tansu binary at $(TANSU); 'make broker-binary' builds it)"; \
		$(CARGO) test --workspace; \
	fi
	$(MAKE) --no-print-directory python-e2e

.PHONY: python-e2e
python-e2e: ## Drive the gRPC API from Python grpcio (stubs generated from proto/) against the real patron binary
	@test -x target/venv-e2e/bin/python || python3 -m venv target/venv-e2e
	target/venv-e2e/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	$(CARGO) build -p patron
	target/venv-e2e/bin/python tests/python/test_api.py

.PHONY: broker-binary
broker-binary: ## Build the tansu broker into ~/.cache/patron/tools (once; reused afterwards)
	@if [ -x "$(TANSU)" ]; then echo "tansu: $(TANSU)"; else \
		echo "building tansu $(TANSU_VERSION) from crates.io into $(TOOLS_DIR) (about 10 minutes, once)"; \
		$(CARGO) install tansu --version $(TANSU_VERSION) --locked --features dynostore --root $(TOOLS_DIR); \
	fi

.PHONY: broker
broker: broker-binary broker-start ## Start a local Kafka-compatible broker (tansu, in memory) on 127.0.0.1:19092

.PHONY: broker-start
broker-start:
	@mkdir -p target
	@if (exec 3<>/dev/tcp/$(subst :,/,$(BROKER))) 2>/dev/null; then echo "a broker is already listening on $(BROKER)"; exit 0; fi; \
	setsid nohup $(TANSU) broker --listener-url tcp://$(BROKER) --advertised-listener-url tcp://$(BROKER) \
		--storage-engine memory://tansu/ >target/tansu.log 2>&1 </dev/null & echo $$! > $(BROKER_PID); \
	for i in $$(seq 1 50); do (exec 3<>/dev/tcp/$(subst :,/,$(BROKER))) 2>/dev/null && exit 0; sleep 0.2; done; \
	echo "tansu did not start; see target/tansu.log"; exit 1

.PHONY: broker-stop
broker-stop: ## Stop the broker that make started
	@if [ -f $(BROKER_PID) ]; then kill $$(cat $(BROKER_PID)) 2>/dev/null || true; rm -f $(BROKER_PID); fi

.PHONY: postgres
postgres: ## Check that PostgreSQL is reachable for the tests (start a local one, or say how to get one)
	@if pg_isready -q -h $(PG_HOST) -p $(PG_PORT) 2>/dev/null || (exec 3<>/dev/tcp/$(PG_HOST)/$(PG_PORT)) 2>/dev/null; then \
		echo "PostgreSQL is up on $(PG_HOST):$(PG_PORT)"; \
	elif command -v pg_ctlcluster >/dev/null && ls /etc/postgresql >/dev/null 2>&1; then \
		echo "starting the local PostgreSQL cluster"; \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start; \
		for i in $$(seq 1 30); do pg_isready -q -h $(PG_HOST) -p $(PG_PORT) && break; sleep 1; done; \
	else \
		echo "PostgreSQL is not reachable on $(PG_HOST):$(PG_PORT), and none is installed here."; \
		echo "Get one, then run make test again:"; \
		echo "  Debian/Ubuntu: sudo apt-get install -y postgresql && sudo pg_ctlcluster \$$(ls /etc/postgresql) main start"; \
		echo "                 sudo -u postgres psql -c \"ALTER USER postgres PASSWORD 'postgres'\" -c 'CREATE DATABASE test'"; \
		echo "                 export PATRON_TEST_DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/test"; \
		echo "  macOS:         brew install postgresql@16 && brew services start postgresql@16"; \
		echo "  any OS, with Docker: docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres:16"; \
		exit 1; \
	fi
	@if command -v psql >/dev/null; then \
		psql "$(PATRON_TEST_DATABASE_URL)" -Atqc 'select 1' >/dev/null 2>&1 || \
		psql "$${PATRON_TEST_DATABASE_URL%/*}/postgres" -qc "CREATE DATABASE $${PATRON_TEST_DATABASE_URL##*/}" ; \
	fi

.PHONY: lint
lint: fmt-check clippy check-domain deploy-check ## Formatting, clippy with warnings as errors, the domain dependency rule, and the deployment manifests

.PHONY: deploy-check
deploy-check: ## Render the Kustomize overlays (and the Helm chart when helm is available) and validate every manifest against the Kubernetes schemas
	bash deploy/check.sh

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: fmt-check
fmt-check:
	$(CARGO) fmt --all --check

.PHONY: clippy
clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: check-domain
check-domain: ## Prove that the domain crates (patron-domain, patron-lifecycle, patron-value, patron-clv) depend on none of tokio, sqlx, tonic, prost, rdkafka
	@for crate in patron-domain patron-lifecycle patron-value patron-clv; do \
		deps=$$($(CARGO) tree -p $$crate -e normal,build --prefix none --format '{p}' | awk '{print $$1}' | sort -u); \
		bad=$$(for c in $(DOMAIN_FORBIDDEN); do echo "$$deps" | grep -Ex "$$c(-.*)?" ; done); \
		if [ -n "$$bad" ]; then echo "$$crate must not depend on: $$bad"; exit 1; fi; \
		echo "$$crate depends on none of: $(DOMAIN_FORBIDDEN)"; \
	done

.PHONY: bench
bench: postgres broker-binary ## Benchmarks (store append, ingest, projection, rebuild and the GetCustomer API), each printed as a ratio to a baseline measured in the same run
	$(CARGO) build --release -p patron -p patron-bench
	./target/release/patron-bench store
	@set -e; $(MAKE) --no-print-directory broker-start; trap '$(MAKE) --no-print-directory broker-stop' EXIT; \
		PATRON_BENCH_KAFKA_BROKERS=$(BROKER) ./target/release/patron-bench ingest

.PHONY: bench-api
bench-api: postgres ## GetCustomer throughput and p50/p99 over loopback gRPC alone (200,000 demo events), next to the raw primary-key SELECT in the same run
	$(CARGO) build --release -p patron -p patron-bench
	./target/release/patron-bench api

.PHONY: bench-clv
bench-clv: ## BG/NBD fit time on CDNOW and 1,000,000 synthetic customers, next to Python lifetimes on the same data (when it installs)
	@test -x target/venv-clv/bin/python || python3 -m venv target/venv-clv || true
	@target/venv-clv/bin/pip install --quiet --disable-pip-version-check lifetimes \
		|| echo "lifetimes cannot be installed here: the benchmark runs without it"
	$(CARGO) run --release -p patron-clv --example bench_vs_lifetimes

# The full-size reliability suite (`make test` runs the same tests in a bounded form).
CRASH_EVENTS ?= 200000
CRASH_KILLS ?= 24
ABUSE_ROUNDS ?= 12
SOAK_SECONDS ?= 600
SOAK_CUSTOMERS ?= 2000

.PHONY: reliability
reliability: postgres ## Reliability suite at full size (release build): SIGKILL crash test over ingest, projector and relay (CRASH_EVENTS=200000, CRASH_KILLS=24; also the concurrency and outage variants) API abuse (ABUSE_ROUNDS=12 rounds of 2,000 watch streams), the load soak (SOAK_SECONDS=600) and every fuzz target (FUZZ_SECONDS each), figures printed
	PATRON_CRASH_EVENTS=$(CRASH_EVENTS) PATRON_CRASH_KILLS=$(CRASH_KILLS) \
		$(CARGO) test --release -p patron-e2e --test crash -- --nocapture --test-threads=1
	PATRON_ABUSE_ROUNDS=$(ABUSE_ROUNDS) $(CARGO) test --release -p patron-e2e --test abuse -- --nocapture
	$(MAKE) --no-print-directory soak SOAK_SECONDS=$(SOAK_SECONDS) SOAK_CUSTOMERS=$(SOAK_CUSTOMERS)
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(FUZZ_SECONDS)

# Rates of the soak (per second) may be changed through PATRON_SOAK_EVENTS (500), PATRON_SOAK_GETS
# (200), PATRON_SOAK_LISTS (20), PATRON_SOAK_KPIS (4); see tests/e2e/soak.rs.
.PHONY: soak
soak: postgres ## Load soak (release build): patron serve on PostgreSQL and the Kafka mock cluster under a fixed-rate open-loop mix of ingest, queries and watch streams for SOAK_SECONDS (600); prints throughput, p50/p99 latency and RSS growth (asserted ≤ 10 % plus 3x the stored views' growth, after warm-up, from 5 minutes on)
	PATRON_SOAK_SECONDS=$(SOAK_SECONDS) PATRON_SOAK_CUSTOMERS=$(SOAK_CUSTOMERS) \
		$(CARGO) test --release -p patron-e2e --test soak -- --nocapture

# Fuzzing: cargo-fuzz (libFuzzer), installed once into TOOLS_DIR; the stable toolchain runs it with
# RUSTC_BOOTSTRAP=1. Seeds are checked in under fuzz/seeds; the corpus grows in fuzz/corpus.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := decode_json decode_cloudevents decode_binary_mode decode_protobuf rules_toml

.PHONY: fuzz
fuzz: ## Fuzz every decoder (JSON, CloudEvents structured and binary mode, protobuf) and the rules file for FUZZ_SECONDS each (60); installs cargo-fuzz once
	@test -x $(TOOLS_DIR)/bin/cargo-fuzz || $(CARGO) install cargo-fuzz --locked --root $(TOOLS_DIR)
	@set -e; cd fuzz; for target in $(FUZZ_TARGETS); do \
		case $$target in rules_toml) seeds=seeds/rules;; decode_protobuf) seeds=seeds/protobuf;; *) seeds=seeds/json;; esac; \
		mkdir -p corpus/$$target; \
		echo "==> fuzzing $$target for $(FUZZ_SECONDS) s"; \
		if PATH="$(TOOLS_DIR)/bin:$$PATH" RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$target corpus/$$target $$seeds -- \
			-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -print_final_stats=1 >fuzz-$$target.log 2>&1; then \
			grep -E "stat::(number_of_executed_units|new_units_added)" fuzz-$$target.log; \
		else tail -40 fuzz-$$target.log; echo "fuzz $$target failed (crash inputs in fuzz/artifacts/$$target)"; exit 1; fi; \
	done

.PHONY: ci
ci: lint test ## What CI runs

.PHONY: clean
clean: ## Remove build output and the local data directory
	$(CARGO) clean
	rm -rf data
