# The two commands: `make run` and `make test`. Everything else is a step of theirs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PROTO  := proto/mediator/v1/mediator.proto
GEN    := mediatord/api/mediator/v1/mediator_pb2.py
BOARD  ?=

.PHONY: run serve test lint typecheck unit gen clean bench

run: $(GEN)
	$(BIN)/mediatord demo $(if $(BOARD),--board $(BOARD))

serve: $(GEN)
	$(BIN)/mediatord serve $(if $(BOARD),--board $(BOARD))

test: lint typecheck unit

lint: $(GEN)
	$(BIN)/ruff check mediatord clients tests bench
	$(BIN)/ruff format --check mediatord clients tests bench

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

bench: $(GEN)
	$(BIN)/python bench/core_dispatch.py
