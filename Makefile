# Two commands a newcomer needs:
#   make demo   run the main job offline on the shared test assets
#   make test   install everything into .venv, check format, lint and layers, run the whole test suite
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: test lint demo venv system-deps bench clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -c constraints.txt torch torchvision
	$(PIP) install -c constraints.txt -e '.[dev]'
	touch $@

venv: $(STAMP)

system-deps:
	bash scripts/system-deps.sh

# format, lint and import layers (pyproject.toml: [tool.ruff], [tool.importlinter]), stopping at the first failure
lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: venv system-deps
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest

demo: venv
	$(PY) run_pipeline.py process ../shared/assets/videos/friends_in_video.mp4 \
		--gallery ../shared/assets/images/friends_gallery --config configs/test.yaml

bench: venv
	$(PY) bench/embed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .import_linter_cache build dist
