# The two commands of the README: `make up` and `make test`.
SHELL := /bin/bash
VENV := .venv/bin
# The tests start a hundred-odd interpreters: let them keep their bytecode caches
# (__pycache__, ignored by git) even where PYTHONDONTWRITEBYTECODE is set, or each
# compiles every module it imports again.
PYTEST := PYTHONDONTWRITEBYTECODE= $(VENV)/pytest

.PHONY: up test test-faults check unit install services fmt lint run bench

up: install services  ## bring everything up and show a job run (Ctrl-C stops)
	$(VENV)/jobledger run --dev --demo

test: install check  ## every check CI runs

check:
	$(VENV)/ruff format --check .
	$(VENV)/ruff check .
	$(VENV)/mypy
	$(VENV)/lint-imports
	$(PYTEST) -q -n 4 --dist loadfile -m "not faults"

test-faults: install services  ## kills and server restarts (CI runs them after `make test`)
	$(PYTEST) -q -n 4 --dist loadfile -m faults

unit: install  ## the pure tests, no services needed
	$(PYTEST) -q tests/unit

install:
	@scripts/install

services:
	@scripts/services

fmt:
	$(VENV)/ruff format .
	$(VENV)/ruff check --fix .

run: install services
	$(VENV)/jobledger run --dev
