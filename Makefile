# Three entry points: set-up, the demo, the tests. demo and test run the set-up first (idempotent).
.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/fvlm demo

test: setup
	@bash scripts/test.sh

bench: setup
	.venv/bin/python -m benchmarks
