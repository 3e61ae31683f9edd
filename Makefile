# The book's two commands (see README.md):
#   make book   create .venv, install everything, execute every chapter once, render the HTML book
#   make test   same set-up, then the lint (ruff), the unit tests and every notebook under nbval
#               (the unit tests as one more job beside the chapters: tools/execute.py)
# Both execute the chapters the same way, under nbval, which saves each executed notebook to
# _build/executed/; `make html` renders the book from those (no second execution).
# and a few more: make serve, make lab, make assignments, make grade SUBMISSIONS=dir,
#   make colab-check, make bench

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip
PORT   ?= 8000
LEARN2LEARN := learn2learn==0.2.0
UV     := uv==0.13.9
# uv installing into .venv without a cache (make env says why)
UV_PIP := $(BIN)/uv pip install -q --no-cache --python $(BIN)/python

# Trained weights, the preprocessed data and unpacked archives live here (git-ignored).
export FEWSHOT_CACHE ?= $(CURDIR)/.cache
# Keep DeprecationWarnings (gym's, torch's) out of the outputs; gym's printed banner is caught
# where chapter 7 imports learn2learn.
export PYTHONWARNINGS ?= ignore::DeprecationWarning

EXECUTED := _build/executed

.PHONY: env book html render serve test lint format unit notebooks comparison-alone lab assignments grade colab-check browser-check methods bench clean

env: $(STAMP)
	@# Chapter 14 reads WordNet 3.0's files and speaks with espeak-ng (Debian packages):
	@# installed here where apt-get is there and we are root, else named.
	@if [ -f /usr/share/wordnet/data.noun ] && command -v espeak-ng >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "env: installing wordnet-base and espeak-ng (chapter 14)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base espeak-ng >/dev/null; \
	else echo "env: chapter 14 needs wordnet-base and espeak-ng, not installed here (no apt-get" \
	    "as root): install them (brew install espeak-ng wordnet on macOS), or skip chapter 14"; fi

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# uv installs the pinned wheels (5 GB, torch's CUDA libraries included) on every core and
	@# compiles their bytecode. No cache: a fresh machine gains nothing from one, and its copy
	@# of the wheels would double the disk used.
	$(PIP) install -q $(UV)
	$(UV_PIP) --compile-bytecode -r requirements.txt pip==26.3
	@# learn2learn 0.2.0 ships C files that fail on Python >= 3.11: re-cythonize them (no cache,
	@# so that a cached wheel cannot hide a broken build), with the cython and numpy installed
	@# above. --no-deps: its optional qpth pins numpy < 2; what importing it needs (gym, requests,
	@# scipy) is in requirements.txt. -j2: its three C extensions compile two at a time.
	$(PIP) install -q --no-cache-dir --no-deps --no-build-isolation $(LEARN2LEARN) \
	    --config-settings="--build-option=build_ext" --config-settings="--build-option=-j2"
	$(UV_PIP) --no-deps -e .
	touch $(STAMP)

book: notebooks html

# The HTML book from the chapters that `make notebooks` (or `make test`) executed and saved in
# $(EXECUTED)/chapters: the book's sources are staged beside them and rendered with -W.
html: env
	@for nb in chapters/*.ipynb; do [ -f $(EXECUTED)/$$nb ] || { \
	    echo "html: $(EXECUTED)/$$nb is missing: execute the chapters first (make notebooks)"; exit 1; }; done
	rm -rf $(EXECUTED)/book && cp -r book _config.yml _toc.yml $(EXECUTED)/
	$(BIN)/jupyter-book build -W -n --keep-going $(EXECUTED) --path-output .
	@echo "The book is at file://$(CURDIR)/_build/html/index.html  (make serve: http://localhost:$(PORT), works offline)"

# The HTML of the chapters as committed, without outputs (seconds): checks the book's structure
# (toc, references, citations, exercises) with -W.
render: env
	$(BIN)/jupyter-book build -W -n --keep-going . --path-output _build/render

# Serves the book built before (make book); everything it needs, MathJax included, is local.
serve:
	@[ -f _build/html/index.html ] || { echo "serve: no book in _build/html: make book first"; exit 1; }
	@echo "Serving the book on http://localhost:$(PORT) (Ctrl-C stops it)"
	$(BIN)/python -m http.server --directory _build/html $(PORT)

# The lint, then the unit tests and the chapters in one run of tools/execute.py (`notebooks` with
# --unit-tests): the unit tests take one of its two lanes first, the chapters the rest (`make
# unit` runs the unit tests alone). `make test COLAB_CHECK=1` (CI) adds the Colab reproduction
# (.ci/colab-check, chapter 7 loading the runs that chapter 7 trained) as one more job.
test: EXECUTE_ARGS := --unit-tests $(if $(COLAB_CHECK),--colab-check)
test: lint notebooks

# ruff over utils/, tests/, benchmarks/, .ci/ and the chapters' code cells (pyproject.toml): the
# lint rules, and the format (lines of at most 100 characters). `make format` rewrites the files.
lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: env
	$(BIN)/ruff format .
	$(BIN)/python -m tools.collect

unit: env
	$(BIN)/python -m pytest tests

# Every chapter once under nbval, two side by side with one thread each on two cores (chapter
# 11 last, alone): tools/execute.py says why and in which order; logs in _build/logs/.
notebooks: env
	rm -rf $(EXECUTED)/chapters
	FEWSHOT_EXECUTED_DIR=$(CURDIR)/$(EXECUTED)/chapters $(BIN)/python -m tools.execute $(EXECUTE_ARGS)

# The comparison chapter on its own, as in Colab or first in a fresh clone: on a cache without
# trained runs it trains every method with the chapters' code (utils/methods.py) before comparing
# them. It refuses a cache that already holds runs (use FEWSHOT_CACHE=an empty folder).
comparison-alone: env
	@if [ -n "$$(ls -A '$(FEWSHOT_CACHE)/runs' 2>/dev/null)" ]; then \
	    echo "comparison-alone: $(FEWSHOT_CACHE)/runs holds trained runs, so chapter 11 would not run alone;"; \
	    echo "  give it an empty cache: make comparison-alone FEWSHOT_CACHE=\$$(mktemp -d)"; exit 1; fi
	@# Training every method is one long cell: nbval's default limit of 2000 s a cell is too short.
	cd chapters && ../$(BIN)/python -m pytest --nbval-lax --nbval-cell-timeout=4000 --durations=10 -p no:cacheprovider \
	    11_comparison.ipynb

lab: env
	$(BIN)/jupyter lab --allow-root chapters

assignments: env
	$(BIN)/python assignments/classroom.py generate

grade: env
	$(BIN)/python assignments/classroom.py autograde $(SUBMISSIONS)

methods: env
	$(BIN)/python -m tools.collect

# What the methods cost on this machine's CPU (benchmarks/speed.py): one table, and
# benchmarks/results/cpu.json, which the page "What it costs" reads; its episode section times
# the runs that make book left in the cache. On a GPU:
# $(BIN)/python -m benchmarks.speed --device cuda (writes benchmarks/results/cuda.json).
bench: env
	$(BIN)/python -m benchmarks.speed

# Colab reproduced here: a fresh Python 3.13 venv with Colab's torch, torchvision, numpy and
# matplotlib (versions in .ci/colab-check), the chapters' Colab cells run as in Colab, chapters 1
# and 7 end to end (5 GB of disk while it runs).
colab-check: env
	.ci/colab-check

# The rendered book in headless chromium; the screenshot goes to _build/artifacts/.
browser-check: env
	$(BIN)/python .ci/browser-check

clean:
	rm -rf _build
