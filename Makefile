# The two commands of the README: `make demo` and `make test`. Each does all set-up first.
.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/cat-aggregator demo

test: setup
	bash firmware_tests/build_mp32.sh
	bash firmware_tests/build_qemu.sh
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python benchmarks/selection.py
