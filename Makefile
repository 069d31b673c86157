# The two quick-start commands: `make demo` and `make test`. Each creates the
# virtual environment and builds the Cython core when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORE_SOURCES := $(wildcard ddc/_core/*.pyx ddc/_core/*.pxd ddc/_core/*.h ddc/handlers/*/*.pyx ddc/handlers/*/*.pxd) setup.py pyproject.toml
PYTEST_ARGS ?=

.PHONY: demo test bench build clean apache-kafka helm kcat

demo: $(VENV)/.built
	$(BIN)/python -m ddc demo

test: $(VENV)/.built-test apache-kafka helm kcat
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The jars of an Apache Kafka broker for the tests marked apache_kafka_too (Maven and Java 17 needed; without
# them those tests are skipped, saying why).
apache-kafka:
	tests/apache_kafka/fetch.sh || echo "make: Apache Kafka's jars were not fetched; its tests will be skipped" >&2

# Helm for the chart's tests (deploy/helm), built from the Go module proxy into build/helm; without Go they
# are skipped, saying why.
HELM_VERSION := v4.3.2
helm: build/helm/bin/helm
build/helm/bin/helm:
	GOBIN=$(CURDIR)/build/helm/bin go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION) \
	    || echo "make: helm was not built (Go and its module proxy needed); the chart's tests will be skipped" >&2

# kcat, one of the Kafka listener's test clients (an older librdkafka), from Debian's packages when run as root;
# without it that test is skipped, saying why.
kcat:
	@command -v kcat >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	    && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null 2>&1 \
	         || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null; }; }; } \
	    || echo "make: kcat was not installed (apt-get install kcat); its test will be skipped" >&2

bench: $(VENV)/.built-test
	@started=$$(date +%s); status=0; \
	for step in "-m pytest bench $(PYTEST_ARGS)" "bench/transport.py $(BENCH_ARGS)" bench/per_side.py \
	        bench/small_records.py bench/pydiode_compare.py bench/files.py bench/memory.py bench/idle.py bench/udp_streams.py \
	        bench/kafka_copy.py bench/kafka_listener.py bench/fec.py bench/fuzz.py bench/hostile_flood.py; do \
	    $(BIN)/python $$step || status=1; \
	done; \
	$(BIN)/python bench/summary.py --since $$started || status=1; \
	exit $$status

build: $(VENV)/.built

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "DDC needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=77" "Cython>=3.0"

$(VENV)/.built: $(VENV)/bin/python $(CORE_SOURCES)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.built-test: $(VENV)/bin/python $(CORE_SOURCES)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@ $(VENV)/.built

clean:
	rm -rf --one-file-system $(VENV) build ddc/_core/*.c ddc/_core/*.so ddc/handlers/*/*.c ddc/handlers/*/*.so *.egg-info

# Coverage-guided fuzzing of the egress receiver under ASan/UBSan (docs/fuzzing.md). fuzz/build.sh installs
# clang and atheris when they are missing; FUZZ_SECONDS is how long each target runs.
FUZZ_SECONDS ?= 600
.PHONY: fuzz fuzz-build fuzz-seeds fuzz-coverage

fuzz-build: $(VENV)/.built-test
	fuzz/build.sh sanitized

fuzz: fuzz-build
	for target in plain sealed fec; do fuzz/run.sh $$target -max_total_time=$(FUZZ_SECONDS) || exit 1; done

fuzz-seeds: $(VENV)/.built-test
	$(BIN)/python fuzz/make_seeds.py

fuzz-coverage: $(VENV)/.built-test
	fuzz/coverage.sh
