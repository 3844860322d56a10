# Ganzhi developer entry points. The README names two: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_HOME := .ganzhi/demo

.PHONY: setup system-deps demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
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

demo: setup
	rm -rf $(DEMO_HOME)
	GANZHI_HOME=$(DEMO_HOME) $(BIN)/ganzhi --inventory deploy/samples/inventory.yaml --ioc deploy/samples/iocs.csv \
	  ingest deploy/samples/extranet-sample.jsonl
	GANZHI_HOME=$(DEMO_HOME) $(BIN)/ganzhi info
	GANZHI_HOME=$(DEMO_HOME) $(BIN)/ganzhi query \
	  "SELECT event_category, count() AS events, uniqExact(src_ip) AS sources FROM events GROUP BY 1 ORDER BY 2 DESC"
	GANZHI_HOME=$(DEMO_HOME) $(BIN)/ganzhi query \
	  "SELECT src_ip, count() AS failed_logins, groupUniqArray(user_name) AS users FROM events \
	   WHERE event_category = 'auth' AND action = 'failure' GROUP BY src_ip ORDER BY failed_logins DESC LIMIT 5"
	GANZHI_HOME=$(DEMO_HOME) $(BIN)/ganzhi query \
	  "SELECT dst_org_unit, dst_asset, max(dst_criticality) AS criticality, count() AS events, \
	   countIf(notEmpty(ioc_ids)) AS ioc_hits FROM events WHERE dst_org_unit != '' GROUP BY 1, 2 ORDER BY 4 DESC"
	GANZHI_HOME=$(DEMO_HOME) $(BIN)/ganzhi deadletters
	GANZHI_HOME=$(DEMO_HOME) $(BIN)/ganzhi incidents list
	GANZHI_HOME=$(DEMO_HOME) $(BIN)/ganzhi --inventory deploy/samples/inventory.yaml situation update --no-notify
	GANZHI_HOME=$(DEMO_HOME) $(BIN)/ganzhi situation show
	GANZHI_HOME=$(DEMO_HOME) $(BIN)/ganzhi warnings list

test: setup system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

bench: setup system-deps
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/api.py --events 1000000

clean:
	rm -rf $(VENV) .ganzhi deploy/local/.cache .pytest_cache
