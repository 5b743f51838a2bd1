# ivf_ros developer entry points. `make demo` and `make test` each set up first (fast when done).
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help setup test lint demo bench

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup:  ## create .venv, install dependencies and ivf_ros, write env.sh (idempotent)
	@bash scripts/setup.sh

lint: setup  ## ament-style lint (ruff: flake8 rules at 99 columns, pep257)
	@. ./env.sh && ruff check .

test: setup  ## lint, then the whole test suite (offline: YOLO never downloads in tests)
	@. ./env.sh && ruff check . && YOLO_OFFLINE=1 python -m pytest

demo: setup  ## the offline night-drive demo: writes output/demo/
	@. ./env.sh && ivf-demo --output output/demo

bench: setup  ## benchmarks that print numbers (image conversion, model, graph)
	@. ./env.sh && for b in scripts/bench_*.py; do python "$$b" || exit 1; done
