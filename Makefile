# The two commands of the README: `make pipeline` and `make test`. Each creates the venv if missing.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: pipeline test grid report bench clean-venv

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# torch and torchvision from the local wheel cache (pinned pair; other pairs download gigabytes)
	$(VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

pipeline: $(VENV)/.installed
	dvc repro

test: $(VENV)/.installed
	$(PY) -m pytest -q

grid: $(VENV)/.installed
	$(PY) -m pipeline.grid run

report: $(VENV)/.installed
	dvc repro report

bench: $(VENV)/.installed
	$(PY) bench/bench_train.py --quick

clean-venv:
	rm -rf $(VENV)
