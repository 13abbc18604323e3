# Two entry points for a fresh clone:
#   make demo   set up .venv, then train and evaluate on the bundled PBC data (ehrseq demo)
#   make test   set up .venv, then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ehrseq-installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml setup.py ehrseq/models/distributions/_native_kernels.c $(wildcard ehrseq/models/distributions/*.h)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned first so that pip takes the CPU wheel (2.13.0) instead of a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/ehrseq demo

test: $(STAMP)
	# one test process per CPU core (at most 4); each runs torch on one thread (tests/conftest.py)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4

clean:
	rm -rf $(VENV) outputs .pytest_cache .hypothesis
