# Both targets set up .venv first (idempotent: scripts/setup.sh does nothing
# when the environment already matches pyproject.toml and itself).
.PHONY: setup demo test test-fast bench

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/reptrans demo

# -n auto: one pytest worker per core (pytest-xdist), tests handed out as workers free up;
# each worker's thread pools default to cores / workers threads (tests/conftest.py).
test: setup
	.venv/bin/python -m pytest -q -n auto --dist worksteal

# The developer loop: the suite without the tests marked `slow` (real encoders, longer
# training). CI runs `make test`, which includes them.
test-fast: setup
	.venv/bin/python -m pytest -q -n auto --dist worksteal -m "not slow"

bench: setup
	mkdir -p out && .venv/bin/python scripts/bench.py --out out/bench.json --md out/bench.md
