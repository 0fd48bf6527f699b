PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DIR ?= .gwadm

.PHONY: install up down status test lint bench clean

$(BIN)/gwadm: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(BIN)/gwadm

install: $(BIN)/gwadm

up: install
	$(BIN)/gwadm cluster up --dir $(DIR)

down: install
	$(BIN)/gwadm cluster down --dir $(DIR)

status: install
	$(BIN)/gwadm cluster status --dir $(DIR)

test: install
	$(BIN)/ruff check gateway cluster proxy cli tests bench
	$(BIN)/mypy --strict gateway
	$(BIN)/pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python bench/cp_write_latency.py

clean:
	rm -rf $(VENV) $(DIR)
