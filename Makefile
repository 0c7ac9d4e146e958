# Shortcuts for dev.py, which needs nothing but Python 3.11+.
.PHONY: demo test lint bench
demo:
	python3 dev.py demo
test:
	python3 dev.py test
lint:
	.venv/bin/ruff check .
bench:
	.venv/bin/python bench/throughput.py
