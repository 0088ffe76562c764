# Two commands do all set-up on a fresh machine:
#   make book   create the environment, build the book (executing the notebooks)
#   make test   create the environment, build the book, run every test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: env tools book test lint clean

env: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# From Debian when missing: npm (the book's browser assets) and chromium (the real-browser
# tests; never `playwright install`).
tools:
	@missing=""; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

book: env tools
	scripts/build_book.sh $(PY)

test: env tools book
	$(PY) -m ruff check shapcam_widgets tests benchmarks notebooks scripts
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider $(NBVAL) notebooks/
	$(PY) -m pytest -q

lint: env
	$(PY) -m ruff check shapcam_widgets tests benchmarks notebooks scripts

clean:
	rm -rf $(VENV) _build node_modules
