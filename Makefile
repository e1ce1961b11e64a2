# Two commands from a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow bench templates samples clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("onboard needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf demo-output
	$(BIN)/onboard run sample_data/customers.xlsx --env local --state demo-output/emulator.sqlite --out demo-output; \
	  status=$$?; echo; echo "Results are in demo-output/:"; ls -1 demo-output | sed 's/^/  /'; exit $$status

test: $(STAMP)
	$(BIN)/ruff check onboard tests benchmarks tools
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# make bench; one part: make bench BENCH="api sequential"; a smoke run: make bench BENCH=--quick
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py $(BENCH)

templates: $(STAMP)
	$(BIN)/onboard template templates/customers-template.xlsx --force
	$(BIN)/onboard template templates/customers-template.csv --force

samples: $(STAMP)
	$(BIN)/python sample_data/make_samples.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache *.egg-info
