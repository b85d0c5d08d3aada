# The two commands of the README:
#   make demo   installs everything needed, then runs the main job on embedded defaults
#   make test   installs everything needed, then runs the quality gates and the whole test suite
.PHONY: demo test bootstrap lint typecheck pytest

VENV := .venv/bin

bootstrap:
	@bash deploy/local/bootstrap.sh

demo: bootstrap
	$(VENV)/royalty demo

lint: bootstrap
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

typecheck: bootstrap
	$(VENV)/mypy

pytest: bootstrap
	$(VENV)/pytest

test: bootstrap
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy
	$(VENV)/pytest
