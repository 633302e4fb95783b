# The two commands of the README: `make up` and `make test`.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: up test test-faults check unit install services fmt lint run bench

up: install services  ## bring everything up and show a job run (Ctrl-C stops)
	$(VENV)/jobledger run --dev --demo

test: install check  ## every check CI runs

check:
	$(VENV)/ruff format --check .
	$(VENV)/ruff check .
	$(VENV)/mypy
	$(VENV)/lint-imports
	$(VENV)/pytest -q -n 4 --dist loadfile -m "not faults"

test-faults: install services  ## kills and server restarts (CI runs them after `make test`)
	$(VENV)/pytest -q -n 4 --dist loadfile -m faults

unit: install  ## the pure tests, no services needed
	$(VENV)/pytest -q tests/unit

install:
	@scripts/install

services:
	@scripts/services

fmt:
	$(VENV)/ruff format .
	$(VENV)/ruff check --fix .

run: install services
	$(VENV)/jobledger run --dev
