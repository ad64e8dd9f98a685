# The two commands of the README: `make pipeline` and `make test`. Each creates the venv if missing.
VENV ?= .venv
# where pip gets torch: empty = the default index (here: the local wheel cache); a GitHub runner sets
# TORCH_INDEX=https://download.pytorch.org/whl/cpu to avoid the multi-GB CUDA wheels
TORCH_INDEX ?=
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: pipeline test test-fast lock grid grid-smoke report bench chromium

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# torch and torchvision from the local wheel cache (pinned pair; other pairs download gigabytes)
	$(VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

# the browser test drives Debian's chromium (Playwright's own browser download does not work offline)
chromium:
	@test -n "$$CHROMIUM" || command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the MLflow UI browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

pipeline: $(VENV)/.installed
	dvc repro

# three pytest-xdist workers on the 2-core machines this runs on (the tests wait on servers and DVC much
# of the time); tests that read one module- or session-wide fixture stay on one worker (tests/conftest.py).
# TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 3

test: $(VENV)/.installed chromium
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=25

# the edit-test loop: the tests without servers, DVC, git clones, grids, stage or training processes, evaluator
# training or long CPU work (the `slow` marker; about 2 min on 2 Zen 3 cores); CI runs them all (`make test`)
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

# refresh dvc.lock and the committed outputs after a change to any stage's code or params (tests/test_lock.py
# fails while the lock does not match): the whole pipeline on the default params, then stage what it wrote
lock: $(VENV)/.installed
	@git diff --quiet HEAD -- params.yaml || { echo "make lock: params.yaml differs from HEAD; the lock is made on the committed defaults"; exit 2; }
	dvc repro
	git add dvc.lock metrics plots reports
	@echo "make lock: dvc.lock, metrics/, plots/ and reports/ staged; commit them with the change"

grid: $(VENV)/.installed
	$(PY) -m pipeline.grid run

# the grid at a smoke budget (as CI runs it): every cell, 2 seeds, tiny steps, on the local runner (one
# process per run: ~17 s for a 20-step run against ~80-100 s as a DVC experiment; tests/test_grid.py
# runs the DVC queue)
grid-smoke: $(VENV)/.installed
	$(PY) -m pipeline.grid run --runner local --name smoke --steps 10 --seeds 0 1 --n-samples 200 --draws 2 --no-log-model

report: $(VENV)/.installed
	dvc repro report

bench: $(VENV)/.installed
	$(PY) bench/bench_train.py --quick
	$(PY) bench/bench_evaluate.py --quick
