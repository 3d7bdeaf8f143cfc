# `make run` and `make test` do all the set-up on a fresh machine.
VENV    ?= .venv
PYTHON  ?= python3
# The CPU build of torch: the exact pin takes the local wheel here instead of several GB of
# CUDA packages. On a GPU machine: make TORCH_SPEC="torch" test
TORCH_SPEC ?= torch==2.13.0
BIN     := $(VENV)/bin

# Data root: ../shared/data when it exists, unless NLPFW_DATA_ROOT is already set; otherwise
# nlpfw's default (./data if it exists, else ~/.cache/nlpfw/data), where `make run` downloads
# CLUENER and the vocabulary first (sha256-checked).
ifeq ($(NLPFW_DATA_ROOT),)
ifneq ($(wildcard ../shared/data),)
export NLPFW_DATA_ROOT := $(abspath ../shared/data)
endif
endif

.PHONY: install run test test-all clean

$(BIN)/.installed: pyproject.toml Makefile examples/nlpfw-globalpointer/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet -e examples/nlpfw-globalpointer
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/nlpfw run recipes/quickstart.toml

test: install
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m ""

clean:
	rm -rf $(VENV) build *.egg-info
