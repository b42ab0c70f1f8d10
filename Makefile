# The two commands of the README:
#   make sweep   set up (once) and run the main job on the embedded default data
#   make test    set up (once) and run the test suite (what .ci/run calls)
# And the loop for someone changing a module:
#   make test-fast   the unit tier and the commands' quick checks, in about two minutes
# Extra arguments for the sweep go in ARGS, e.g. make sweep ARGS="tuner=hyperband".

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: sweep test test-fast install lint clean

sweep: $(VENV)/.installed
	$(PY) -m happysad.sweep $(ARGS)

# Two workers (pytest-xdist): the suite waits on processes and servers much of the time.
test: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist loadgroup $(ARGS)

# The unit tier (tests/unit: no training, no server, no subprocess) and the commands'
# --help and bad-input checks; the slowest 15 listed.
test-fast: $(VENV)/.installed
	$(PY) -m pytest tests/unit tests/integration/test_commands.py --durations=15 $(ARGS)

install: $(VENV)/.installed

# Re-installs when pyproject.toml changes; the editable install tracks src/ by itself.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

clean:
	rm -rf outputs .cache
