# The two commands of the README:
#   make run    install (CPU torch pinned) and run the default recipe (tiny DPO, a minute on a CPU)
#   make test   install and run the test-suite
PYTHON ?= python3
PIP = $(PYTHON) -m pip
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup run test bench tiny-model clean

setup:
	$(PIP) install -c constraints.txt "torch==2.13.0"
	$(PIP) install -c constraints.txt -e ".[dev,wandb,tensorboard,qlora,deepspeed,slurm]"

run: setup
	$(PYTHON) -m align_train

# Two workers, a test file each at a time (a file's module fixtures, such as its launcher runs, stay in one), the
# slowest files first (tests/conftest.py orders them).
test: setup
	$(PYTHON) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# Speed and memory against plain TRL, the defaults, cost growth, NeST vs LoRA vs full: bench/results/.
bench: setup
	$(PYTHON) -m bench.run

# Rebuild the bundled tiny data sets and the embedded tiny model from scratch (a few minutes).
tiny-model:
	$(PYTHON) scripts/make_tiny_data.py
	$(PYTHON) scripts/make_msm_data.py
	$(PYTHON) scripts/build_tiny_model.py

clean:
	rm -rf runs outputs multirun .pytest_cache
