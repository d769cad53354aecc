# One command to set everything up and run: `make repro` (the pipeline) or `make test`.
# Both create the virtual environment .venv here when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared/datasets

.PHONY: setup raw-data repro remote push pull zoo test test-fast bench clean
DVC := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc
# Where `make push` / `make pull` keep results: the remote 'local' of .dvc/config (a folder
# beside this checkout) unless DVC_REMOTE_URL names another (a path, s3://, gs://, ssh://...;
# see README, "Share and restore results"). It is written to .dvc/config.local (not committed).
DVC_REMOTE_URL ?=

setup: $(VENV)/.installed

# constraints.txt pins every package to the versions the suite passed with, so a fresh
# clone resolves the same stack (pyproject.toml keeps the compatible ranges).
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# The offline raw data: Fashion-MNIST's IDX files and CIFAR-10's canonical archive,
# written from ../shared/datasets when it is there (byte for byte the files that
# data/raw/*.dvc record), else pulled from the DVC remote (see README, "Data").
raw-data: setup
	@if [ -d $(SHARED)/fashion-mnist ] && [ ! -f data/raw/fashion_mnist/train-images-idx3-ubyte.gz ]; then \
	  mkdir -p data/raw/fashion_mnist && cp $(SHARED)/fashion-mnist/*.gz data/raw/fashion_mnist/; fi
	@if [ -f $(SHARED)/build_cifar10_binary.py ] && [ ! -f data/raw/cifar10/cifar-10-binary.tar.gz ]; then \
	  $(PY) $(SHARED)/build_cifar10_binary.py data/raw/cifar10; fi
	@for dataset in fashion_mnist cifar10; do \
	  if [ ! -d data/raw/$$dataset ]; then $(DVC) pull data/raw/$$dataset.dvc || \
	    echo "note: data/raw/$$dataset is neither in $(SHARED) nor on the DVC remote; prepare will download it"; fi; \
	done

# The pipeline, then what `make push` would upload (everything it made is in DVC's cache).
repro: raw-data
	$(DVC) repro
	@echo "Outputs are in DVC's cache; 'make push' shares them (remote: $$($(DVC) remote list | head -1))."
	@$(DVC) status --cloud || true

remote: setup
	@if [ -n "$(DVC_REMOTE_URL)" ]; then $(DVC) remote modify --local local url "$(DVC_REMOTE_URL)"; fi
	@$(DVC) remote list

push: remote
	$(DVC) push

pull: remote
	$(DVC) pull $$($(MAKE) -s pull-targets)

# What `make pull` fetches: what has been run, i.e. the default pipeline, the raw data and each
# zoo stage its lock records. (A bare `dvc pull` also tries the zoo stages never run, which
# have no hash yet, and exits 1 naming them.) `dvc status $$(make -s pull-targets)` checks them.
.PHONY: pull-targets
pull-targets:
	@$(PY) -c "import glob, os, yaml; print(' '.join(['dvc.yaml'] + sorted(glob.glob('data/raw/*.dvc')) + \
	  [f'{os.path.dirname(lock)}/dvc.yaml:{stage}' for lock in sorted(glob.glob('zoo/*/dvc.lock')) \
	   for stage in yaml.safe_load(open(lock))['stages']]))"

# The zoo's experiment sets (params.yaml `zoo` and `zoo_cpu`), each its own DVC pipeline with
# its outputs under zoo/paper/ or zoo/cpu/ (README, "The zoo"). `make zoo`: the papers' budgets
# (GPU machines). `make zoo-cpu`: every model on a fixed CPU budget, cheapest first, each
# experiment trained, evaluated and locked before the next starts (so an interrupted set keeps
# what it finished; run it again to continue), then the set's report. ZOO_KEEP_GOING=1 goes on
# past a failing experiment (it is listed at the end, and the target fails).
zoo: raw-data
	$(MAKE) zoo-set ZOO_SET=zoo ZOO_DIR=zoo/paper

zoo-cpu: raw-data
	$(MAKE) zoo-set ZOO_SET=zoo_cpu ZOO_DIR=zoo/cpu

.PHONY: zoo-cpu zoo-set
zoo-set:
	@failed=""; for experiment in $$($(PY) -c "import yaml; print(' '.join(yaml.safe_load(open('params.yaml'))['$(ZOO_SET)']))"); do \
	  $(DVC) repro $(ZOO_DIR)/dvc.yaml:evaluate@$$experiment || { failed="$$failed $$experiment"; \
	    [ -n "$(ZOO_KEEP_GOING)" ] || exit 1; }; \
	done; \
	$(DVC) repro $(ZOO_DIR)/dvc.yaml:report; \
	if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

test: raw-data
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf data/tfrecords models metrics/*.tmp .pytest_cache

# The GPU check (pipeline/gpu_check.py): assemble build/gpu-check/ (the wheels the GPU machine
# lacks, the CIFAR-10 JPEG copy, manifest.json, run.sh; under the 64 MiB a device call carries),
# print the device command, then run the check here on the CPU in its quick form (tiny budgets,
# marked "quick": true; with only the GPU machine's packages importable) ->
# build/gpu-check-quick/gpu_check.json. FASHION_MNIST=1 carries Fashion-MNIST too.
.PHONY: gpu-check
gpu-check: setup
	$(PY) -m pipeline.gpu_check build $(if $(FASHION_MNIST),--fashion-mnist)
	$(PY) -m pipeline.gpu_check run --quick --as-gpu-machine --out build/gpu-check-quick
