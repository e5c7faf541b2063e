# Two entry points for a fresh machine (see README):
#   make study   sets up .venv and runs the default k_sweep study on the local embedded Ray
#   make test    sets up .venv and runs lint plus the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SPACE  ?= k_sweep

.PHONY: setup study test lint report clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

study: setup
	$(PY) -m study.run --space $(SPACE)

report: setup
	$(PY) -m reports studies/$(SPACE)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
