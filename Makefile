PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DIR ?= .gwadm

.PHONY: install up down status test lint bench chaos clean

$(BIN)/gwadm: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test,chaos,fast]'
	touch $(BIN)/gwadm

install: $(BIN)/gwadm

up: install
	$(BIN)/gwadm cluster up --dir $(DIR)

down: install
	$(BIN)/gwadm cluster down --dir $(DIR)

status: install
	$(BIN)/gwadm cluster status --dir $(DIR)

test: install
	$(BIN)/ruff check gateway cluster proxy cli chaos tests bench
	$(BIN)/mypy --strict gateway cluster proxy cli chaos bench
	$(BIN)/pytest -q -p no:cacheprovider

# The long chaos run: every scenario on 3 and 5 nodes, several seeds (the CI smoke is in make test).
chaos: install
	$(BIN)/gwadm chaos run --scenario all --nodes 3 --seed 1 --seed 2 --seed 3 --duration 60 --out chaos-out/n3
	$(BIN)/gwadm chaos run --scenario all --nodes 5 --seed 1 --seed 2 --seed 3 --duration 60 --out chaos-out/n5

# Every benchmark (not part of make test): installs nginx, wrk and etcd from Debian when root, writes
# bench/results/latest.md and latest.json (~12 min). QUICK=1: a short smoke run (bench/results/quick.*).
bench: install
	$(BIN)/python -m bench.run $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) $(DIR)
