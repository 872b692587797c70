# The two commands: `make run` and `make test`. Everything else is a step of theirs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PROTO  := proto/mediator/v1/mediator.proto
GEN    := mediatord/api/mediator/v1/mediator_pb2.py
BOARD  ?=

.PHONY: run serve test lint typecheck unit gen clean bench bench-short check-deploy

run: $(GEN)
	$(BIN)/mediatord demo $(if $(BOARD),--board $(BOARD))

serve: $(GEN)
	$(BIN)/mediatord serve $(if $(BOARD),--board $(BOARD))

test: lint typecheck unit

lint: $(GEN)
	$(BIN)/ruff check mediatord clients tests bench deploy
	$(BIN)/ruff format --check mediatord clients tests bench deploy

typecheck: $(GEN)
	$(BIN)/mypy --strict mediatord clients/mediator_client

unit: $(GEN)
	$(BIN)/pytest -q

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Generated code is never committed: protoc (bundled in grpcio-tools) writes it here.
# The -I mapping makes the generated modules import each other as mediatord.api.*.
$(GEN): $(PROTO) $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc \
	  -Imediatord/api=proto \
	  --python_out=. --grpc_python_out=. --mypy_out=quiet:. --mypy_grpc_out=quiet:. \
	  mediatord/api/mediator/v1/mediator.proto
	touch mediatord/api/__init__.py mediatord/api/mediator/__init__.py mediatord/api/mediator/v1/__init__.py
	touch $@

gen: $(GEN)

clean:
	rm -rf $(VENV) mediatord/api .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Benchmarks (bench/run.py): they report, they never fail on a target.
# `bench` is the full run (a few minutes; profiles mediatord with py-spy, installed
# into the venv on first use) and writes bench/results.json and bench/profile.svg;
# `bench-short` is the seconds-long CI variant.
bench: $(GEN)
	@test -x $(BIN)/py-spy || $(BIN)/python -m pip install --quiet 'py-spy>=0.4,<0.5' \
	  || echo "py-spy could not be installed: the run goes on without a profile"
	$(BIN)/python bench/run.py --json bench/results.json --profile-svg bench/profile.svg

bench-short: $(GEN)
	$(BIN)/python bench/run.py --short --json .cache/bench-short.json

# ---- deployment files (deploy/): each checked by its real tool, and against a real daemon.
# promtool: the one on PATH, else Debian's prometheus package unpacked into .cache/ (kept).
PROMTOOL ?= $(or $(shell command -v promtool 2>/dev/null),$(CURDIR)/.cache/promtool/promtool)

$(CURDIR)/.cache/promtool/promtool:
	@echo "promtool is not on PATH: extracting it from Debian's prometheus package into .cache/"
	rm -rf .cache/promtool.tmp && mkdir -p .cache/promtool.tmp
	cd .cache/promtool.tmp && { apt-get download prometheus 2>/dev/null \
	  || { apt-get update -qq && apt-get download prometheus; }; }
	dpkg-deb -x .cache/promtool.tmp/prometheus_*.deb .cache/promtool.tmp/root
	mkdir -p $(@D) && mv .cache/promtool.tmp/root/usr/bin/promtool $@
	rm -rf .cache/promtool.tmp
	$@ --version

check-deploy: $(GEN) $(PROMTOOL)
	$(PROMTOOL) check config deploy/prometheus.yml
	$(PROMTOOL) check rules deploy/alerts.yml
	$(PROMTOOL) test rules deploy/alerts_test.yml
	$(BIN)/python deploy/check_deploy.py --promtool $(PROMTOOL) --mediatord $(CURDIR)/$(BIN)/mediatord
	sh deploy/check-files.sh $(BIN)
	@echo "check-deploy: all deployment checks passed"
