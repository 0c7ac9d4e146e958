# Shortcuts for dev.py, which needs nothing but Python 3.11+.
.PHONY: demo test lint bench
demo:
	python3 dev.py demo
test:
	python3 dev.py test
lint:
	.venv/bin/ruff check .
# Every bench with its defaults, one after another (about 20 minutes; each rewrites its own
# section of bench/RESULTS.md). For the published figures add --repeat 3: make bench REPEAT=3
REPEAT ?= 1
bench:
	.venv/bin/python bench/throughput.py --repeat $(REPEAT)
	.venv/bin/python bench/slowapi.py --repeat $(REPEAT)
	.venv/bin/python bench/enqueue.py --repeat $(REPEAT)
	.venv/bin/python bench/ratelimit.py --repeat $(REPEAT)
	.venv/bin/python bench/waiting.py --repeat $(REPEAT)
	.venv/bin/python bench/storage.py
