# The two set-up commands: `make demo` runs the demo, `make test` runs the tests.
# Both create the virtual environment .venv and install lazyexport into it on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

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
