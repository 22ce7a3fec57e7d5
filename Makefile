# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# The venv is bootstrapped on first use; CPU torch is installed before anything that needs it,
# so no multi-GB CUDA build is ever downloaded.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# A local CPU wheel (pip's find-links) is used when the machine has one; else PyTorch's CPU index.
TORCH_INDEX ?= $(if $(wildcard /opt/wheels/torch-2.13.0+cpu*.whl),,--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False

.PHONY: demo test lint typecheck bench accuracy clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "torch==2.13.0" $(TORCH_INDEX)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/modelcache demo

test: $(STAMP) typecheck
	$(BIN)/ruff check .
	$(BIN)/pytest -q

# mypy cannot follow the import hook of an editable install that maps core/ to `modelcache`,
# so the check sees the package through a symlink instead: the same from a clean clone.
TYPED := $(addprefix build/typing/modelcache/,__init__.py config.py errors.py stats.py \
	request.py engine.py storage/schema.py storage/rows.py maintenance.py acceptance.py \
	vectors/base.py vectors/recall.py) tests/typing/user_script.py
typecheck: $(STAMP)
	@mkdir -p build/typing && ln -sfn ../../core build/typing/modelcache
	$(BIN)/mypy $(TYPED)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/latency.py

accuracy: $(STAMP)
	$(BIN)/python benchmarks/accuracy.py

clean:
	rm -rf $(VENV) modelcache_data .pytest_cache .mypy_cache build/typing
