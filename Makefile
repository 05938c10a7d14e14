# The two commands of the README: `make demo` and `make test`. Each does all set-up first.
.PHONY: setup demo test test-fast bench

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/cat-aggregator demo

test: setup
	bash firmware_tests/build_mp32.sh
	bash firmware_tests/build_qemu.sh
	QEMU_EDGE=none bash firmware_tests/build_qemu.sh
	.venv/bin/python -m pytest -q

# The inner loop: unit tests only, no real peers, processes or MicroPython (under 2 minutes).
test-fast: setup
	.venv/bin/python -m pytest -q -m "not e2e and not slow"

bench: setup
	.venv/bin/python benchmarks/selection.py
