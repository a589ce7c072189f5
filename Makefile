# Two commands a newcomer needs:
#   make demo   run the main job offline on the shared test assets
#   make test   install everything into .venv and run the whole test suite
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: test demo venv system-deps bench clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -c constraints.txt torch torchvision
	$(PIP) install -c constraints.txt -e '.[dev]'
	touch $@

venv: $(STAMP)

system-deps:
	bash scripts/system-deps.sh

test: venv system-deps
	$(PY) -m pytest

demo: venv
	$(PY) run_pipeline.py process ../shared/assets/videos/friends_in_video.mp4 \
		--gallery ../shared/assets/images/friends_gallery --config configs/test.yaml

bench: venv
	$(PY) bench/embed.py

clean:
	rm -rf $(VENV) .pytest_cache
