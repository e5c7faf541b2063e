# Two entry points for a fresh machine (see README):
#   make study   sets up .venv and runs the default k_sweep study on the local embedded Ray
#   make test    sets up .venv and runs lint plus the whole test suite (what CI runs)
#   make test-fast  the in-process tier (no test marked slow), with line coverage: every edit
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SPACE  ?= k_sweep

# pytest rewrites the asserts of every test module in each of its processes, and caches the
# result beside the source only when Python may write bytecode (__pycache__ is git-ignored).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup study test test-fast lint report clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

study: setup
	$(PY) -m study.run --space $(SPACE) --resume-if-exists

report: setup
	$(PY) -m reports studies/$(SPACE)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Two workers, a file at a time: each worker's tests share its one Ray instance, and the many
# waits of the slow tier (Ray starting, drivers killed and resumed) overlap the other's work.
test: lint
	$(PY) -m pytest -q -n 2 --dist loadfile

# Multi-process, cluster, kill/resume and stress tests are marked slow and left to `make test`.
test-fast: setup
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider -n 2 --dist loadfile \
		--cov=trainables --cov=search_spaces --cov=study --cov=reports \
		--cov-report=term:skip-covered --cov-fail-under=80

clean:
	rm -rf $(VENV) build *.egg-info
