# The two set-up commands: `make demo` runs the demo, `make test` runs the tests.
# Both create the virtual environment .venv and install lazyexport into it on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean random

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lazyexport demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

bench: $(STAMP)
	$(PY) benchmarks/bench.py --formats zarr,hdf5,tiff-sequence,zarr-sharded --scaling

# The randomized end-to-end comparison against numpy at length (make test runs 40 cases);
# RANDOM_CASES and RANDOM_SEED choose how many and which.
RANDOM_CASES ?= 1000
RANDOM_SEED ?= 13
random: $(STAMP)
	LAZYEXPORT_RANDOM_CASES=$(RANDOM_CASES) LAZYEXPORT_RANDOM_SEED=$(RANDOM_SEED) $(PY) -m pytest -q tests/test_random_e2e.py
