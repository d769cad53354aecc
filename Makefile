# One command to set everything up and run: `make repro` (the pipeline) or `make test`.
# Both create the virtual environment .venv here when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared/datasets

.PHONY: setup raw-data repro zoo test test-fast bench clean

setup: $(VENV)/.installed

# constraints.txt pins every package to the versions the suite passed with, so a fresh
# clone resolves the same stack (pyproject.toml keeps the compatible ranges).
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# The offline raw data: Fashion-MNIST's IDX files and CIFAR-10's canonical archive,
# written from ../shared/datasets when it is there (see README, "Data").
raw-data: setup
	@if [ -d $(SHARED)/fashion-mnist ] && [ ! -f data/raw/fashion_mnist/train-images-idx3-ubyte.gz ]; then \
	  mkdir -p data/raw/fashion_mnist && cp $(SHARED)/fashion-mnist/*.gz data/raw/fashion_mnist/; fi
	@if [ -f $(SHARED)/build_cifar10_binary.py ] && [ ! -f data/raw/cifar10/cifar-10-binary.tar.gz ]; then \
	  $(PY) $(SHARED)/build_cifar10_binary.py data/raw/cifar10; fi

repro: raw-data
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

# The whole zoo at the papers' budgets (GPU machines): train and evaluate each `zoo` experiment.
zoo: raw-data
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro prepare
	for experiment in $$($(PY) -c "import yaml; print(' '.join(yaml.safe_load(open('params.yaml'))['zoo']))"); do \
	  PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pipeline.train --experiment $$experiment && \
	  PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pipeline.evaluate --experiment $$experiment || exit 1; \
	done
	$(PY) -m pipeline.report

test: raw-data
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf data/tfrecords models metrics/*.tmp .pytest_cache
