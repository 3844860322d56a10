# Ganzhi developer entry points. The README names two: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
NATIVE := sensors/logs/native
# rustup installs cargo here; a login shell would add it to PATH, make's environment may not
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup system-deps fonts demo demo-no-serve test lint bench clean

setup: $(VENV)/.installed $(VENV)/.native

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# grafana-client pulls niquests -> urllib3-future, whose wheel replaces urllib3 at every interpreter start
	# (a .pth hook) and breaks requests (schemathesis); built from source with this switch both live side by side
	URLLIB3_NO_OVERRIDE=1 $(BIN)/pip install -q --no-binary urllib3-future -e '.[test,bench]'
	touch $@

# the native JSON readers and wire codec (Rust, PyO3; pipeline/native.py): a Rust toolchain and crates.io are
# needed to build it
$(VENV)/.native: $(VENV)/.installed $(NATIVE)/Cargo.toml $(NATIVE)/Cargo.lock $(NATIVE)/pyproject.toml \
                 $(wildcard $(NATIVE)/src/*.rs)
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs), then run make setup again" >&2; exit 1; }
	$(BIN)/pip install -q ./$(NATIVE)
	touch $@

# Java and Maven run the local Kafka broker used by the integration tests; libpcap compiles the packet
# sensor's BPF filters (through scapy) and iproute2 makes the veth pair of the live-capture test.
# poppler-utils (pdftoppm, pdftotext) checks the rendered bulletin PDF; fonts-wqy-zenhei gives the bulletin its
# Chinese glyphs; docker-compose (Debian's, works without a Docker engine) validates deploy/compose.
# Each is installed only if missing.
system-deps:
	@command -v java >/dev/null && command -v mvn >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless maven; }
	@{ ldconfig -p | grep -q libpcap.so && command -v ip >/dev/null; } || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpcap0.8 iproute2; }
	@{ command -v pdftoppm >/dev/null && test -f /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc; } || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq poppler-utils fonts-wqy-zenhei; }
	@command -v docker-compose >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose; }

# the bulletin's Chinese glyphs (Debian fonts-wqy-zenhei), installed only if missing
fonts:
	@test -f /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-zenhei; }

demo: setup fonts
	GANZHI_HOME=.ganzhi $(BIN)/ganzhi demo

demo-no-serve: setup fonts
	GANZHI_HOME=.ganzhi $(BIN)/ganzhi demo --no-serve

test: setup system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

bench: setup system-deps
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/api.py --events 1000000

clean:
	rm -rf $(VENV) .ganzhi deploy/local/.cache .pytest_cache $(NATIVE)/target
