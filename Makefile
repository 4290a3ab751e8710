# The two set-up commands: `make demo` runs the demo, `make test` runs the tests.
# Both create the virtual environment .venv and install lazyexport into it on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-pythons lock lint bench bench-memory bench-scale bench-cluster clean random crashtest memtest

# Every virtual environment is installed from the lock of its Python (requirements/test-pyX.Y.txt,
# every package pinned; made by make lock from pyproject.toml's test extra), then lazyexport itself
# without dependencies: no resolver runs, any pip installs it, and every machine gets the same
# versions. The installer is uv (pinned below, in its own virtual environment $(LOCK_TOOLS)): the
# three environments of make test hold napari, Qt and moto, which pip took 1.5 to 2 minutes each to
# install; uv installs the same pins from one cache in seconds (pip install -r LOCK, then pip install
# --no-deps -e ., installs the same). --compile-bytecode: every module compiled once, at install
# time; with PYTHONDONTWRITEBYTECODE set (as this machine sets it) an uncompiled environment compiles moto,
# dask, napari, ... again in every test subprocess, which made the suite half as fast again.
# $(call install,VENV,LOCK)
UV_VERSION ?= 0.13.8
LOCK_TOOLS := $(VENV)-lock
UV := $(LOCK_TOOLS)/bin/uv
install = $(UV) pip install --quiet --compile-bytecode --python $(1)/bin/python -r $(2) \
	&& $(UV) pip install --quiet --python $(1)/bin/python --no-deps -e .
lock_of = requirements/test-py$(1).txt
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
LOCK := $(call lock_of,$(PYTHON_VERSION))

$(UV):
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/python -m pip install --quiet uv==$(UV_VERSION)

$(STAMP): pyproject.toml $(LOCK) | $(UV)
	$(PYTHON) -m venv $(VENV)
	$(call install,$(VENV),$(LOCK))
	touch $(STAMP)

requirements/test-py%.txt:
	@echo "error: no lock for Python $* ($@): add $* to LOCK_PYTHONS and run make lock" >&2; exit 1

demo: $(STAMP)
	$(VENV)/bin/lazyexport demo

# Static checks (part of make test): ruff lint and format (line length 100), mypy on lazyexport/
# and tests/ (the files of pyproject.toml's [tool.mypy]).
LINTED := lazyexport tests benchmarks scripts
lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

# make test: the samples that carry the promises (contracts of writers, readers and storage
# backends, object storage, the randomized end-to-end comparison, the fast chunk path, shards,
# byte order) on every other Python that pyproject.toml's requires-python admits, each in its own
# virtual environment with the dependency versions its lock pins (.venv-3.12, .venv-3.13); the
# memory tests per chunk layout (each format once, each layout at least once) on the newest of
# them too; then the whole suite on the default Python. The 8 GiB memory campaign
# (tests/test_memory_budget.py, 1.5 minutes) runs on the default Python only, so that CI stays
# under 30 minutes on two cores.
test: lint
	$(MAKE) test-pythons
	$(PY) -m pytest -q

OTHER_PYTHONS ?= 3.12 3.13
NEWEST_PYTHON ?= 3.13
# Every other Python runs the contract suites; the newest also the object-storage, random,
# chunk-path, shard, byte-order and memory-layout tests (3.12 and 3.13 get the same library versions).
PYTHON_SAMPLES := tests/test_contracts.py tests/test_reader_contracts.py tests/test_storage_backends.py
NEWEST_SAMPLES := tests/test_object_storage.py tests/test_random_e2e.py tests/test_chunkio.py \
	tests/test_shards.py tests/test_byte_order.py tests/test_memory_layouts.py
test-pythons: | $(UV)
	@set -e; for v in $(OTHER_PYTHONS); do \
		venv=$(VENV)-$$v; \
		lock=$(call lock_of,$$v); \
		if [ ! -f $$lock ]; then echo "error: no lock for Python $$v ($$lock): run make lock" >&2; exit 1; fi; \
		if [ ! -f $$venv/.installed ] || [ pyproject.toml -nt $$venv/.installed ] || [ $$lock -nt $$venv/.installed ]; then \
			interpreter=$$(.ci/find-python $$v); \
			echo "installing lazyexport[test] for Python $$v ($$interpreter) into $$venv from $$lock"; \
			$$interpreter -m venv $$venv; \
			$(call install,$$venv,$$lock); \
			touch $$venv/.installed; \
		fi; \
		echo "Python $$v: $$($$venv/bin/python -c 'import sys, zarr, numpy, dask; print(sys.version.split()[0], "zarr", zarr.__version__, "numpy", numpy.__version__, "dask", dask.__version__)')"; \
		samples="$(PYTHON_SAMPLES)"; \
		if [ "$$v" = "$(NEWEST_PYTHON)" ]; then samples="$$samples $(NEWEST_SAMPLES)"; fi; \
		LAZYEXPORT_MEMORY_LAYOUTS=diagonal $$venv/bin/python -m pytest -q -p no:cacheprovider $$samples; \
	done

# make lock: the locks of the test environment, one per Python that make test uses (the default and
# OTHER_PYTHONS), from pyproject.toml's test extra, resolved by uv (pinned below) for each
# interpreter .ci/find-python finds. Pins already in a lock stay while pyproject.toml admits them
# (a new package is added, nothing else moves); make lock UPGRADE=1 moves every pin to the newest
# release. Commit the changed requirements/ files with the pyproject.toml change.
LOCK_PYTHONS ?= $(sort $(PYTHON_VERSION) $(OTHER_PYTHONS))
lock: | $(UV)
	@set -e; mkdir -p requirements; for v in $(LOCK_PYTHONS); do \
		lock=$(call lock_of,$$v); \
		echo "locking lazyexport[test] for Python $$v into $$lock"; \
		$(LOCK_TOOLS)/bin/uv pip compile --quiet --no-header $(if $(UPGRADE),--upgrade) \
			--python "$$(.ci/find-python $$v)" --extra test -o $$lock pyproject.toml; \
		{ echo "# The test environment of lazyexport on Python $$v (Linux x86_64): every package pinned."; \
		  echo "# Made by make lock (uv $(UV_VERSION): uv pip compile --extra test pyproject.toml for"; \
		  echo "# Python $$v) from pyproject.toml's test extra; do not edit. make test installs it with"; \
		  echo "# uv pip install -r $$lock, then --no-deps -e . (pip installs it the same way)"; \
		  cat $$lock; } > $$lock.new; \
		mv $$lock.new $$lock; \
	done

clean:
	rm -rf $(VENV) $(VENV)-* .pytest_cache .hypothesis

bench: $(STAMP)
	$(PY) benchmarks/bench.py --formats zarr,hdf5,tiff-sequence,zarr-sharded,zarr-sharded-deep --scaling
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/objstore.py
	$(PY) benchmarks/regions.py
	$(PY) benchmarks/startup.py
	$(PY) benchmarks/ome_zarr.py
	$(PY) benchmarks/budget_sweep.py
	$(PY) benchmarks/limit.py

# The cost model against measured peaks: an 8 GiB generated source in five chunk layouts to
# every format at memory_limit=512MiB (about 20 minutes), and an empty 1 TiB / 64 TiB source's
# time to the first written block and client memory.
bench-memory: $(STAMP)
	$(PY) benchmarks/memory.py --part memory

bench-scale: $(STAMP)
	$(PY) benchmarks/memory.py --part scale

# A cluster started as users start one (dask scheduler + 3 dask worker processes): the scheduler's
# tasks and memory for an empty 1 TiB and 64 TiB export (60 s each), and each worker's peak on the
# deep-chunk layout against its share (docs/cluster.md).
bench-cluster: $(STAMP)
	$(PY) benchmarks/cluster_scale.py

# The randomized end-to-end comparison against numpy at length (make test runs 40 cases);
# RANDOM_CASES and RANDOM_SEED choose how many and which.
RANDOM_CASES ?= 1000
RANDOM_SEED ?= 13
random: $(STAMP)
	LAZYEXPORT_RANDOM_CASES=$(RANDOM_CASES) LAZYEXPORT_RANDOM_SEED=$(RANDOM_SEED) $(PY) -m pytest -q tests/test_random_e2e.py tests/test_random_bin.py tests/test_random_smooth.py tests/test_random_segment.py

# The memory campaign in full: 8 GiB in every format and the deep-chunked TIFF sequence at 4 GiB
# (make test runs hdf5, zarr in the growth test, and the sequence at 2 GiB).
memtest: $(STAMP)
	LAZYEXPORT_MEMORY_FORMATS=all $(PY) -m pytest -q tests/test_memory_budget.py

# The SIGKILL campaign: real exports of every format killed at random moments, each followed by
# the next --resume run (make test runs one kill per format); CRASH_KILLS per format.
CRASH_KILLS ?= 10
crashtest: $(STAMP)
	$(PY) tests/helpers/crashtest.py --kills $(CRASH_KILLS)
