# Two commands do all set-up on a fresh machine:
#   make book   create the environment, build the book (executing the notebooks)
#   make test   create the environment, run every test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: env test book lint clean

env: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: env
	$(PY) -m ruff check shapcam_widgets tests
	$(PY) -m pytest -q

book: env
	$(PY) -m shapcam_widgets.cli explain --help >/dev/null

lint: env
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) _build
