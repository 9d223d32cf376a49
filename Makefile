# Set-up and the project's jobs. Every target creates .venv first if it is missing.
#   make test           the test suite (minutes on 2 CPU cores; the CUDA tests skip without a GPU)
#   make test-gpu       the CUDA tests only (tests marked cuda: bf16, fused AdamW, compile, NCCL, resume)
#   make demo           the whole adaptive-training pipeline, small (<= 15 min on 2 CPU cores): depth 2 -> 4 with
#                       pilots and the measured transfer; `make demo-patch` the patch-size demo
#   make reproduce      the same pipeline at full size (one seed ~1 h on 2 CPU cores; --seeds 0 1 2: 2.4-3.3 h, --plan)
#   make reproduce-lm   the language-model (context length) pipeline
#   make reproduce-lm-depth   the language model's depth grown 2 -> 4 -> 6 on code (demo preset)
#   make hparams-batch / hparams-distill   batch-size and objective schedules (paper Sec. 6.2)
#   make reproduce-width / reproduce-depth / reproduce-joint   growing ViTs (Sec. 6.1, App. D; demo preset:
#                       add ARGS="--preset full" for the paper's comparison at CPU scale)
#   make bench          the benchmarks in lab/bench/ (a separate .venv-bench with timm, transformers)
# All five run lab/reproduce.py (--experiment patch|context|batch|distill --preset demo|full|smoke); add flags with
# ARGS, e.g. `make demo ARGS="--seeds 0 1 2"`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
# torch==2.13.0 resolves to a CPU build where a local wheel is offered (PIP_FIND_LINKS);
# override with `make TORCH=torch` to take whatever pip picks (e.g. a CUDA build on a GPU machine).
TORCH  ?= torch==2.13.0
DATA   ?= /usr/share/datasets/fashion-mnist
ARGS   ?=

.PHONY: venv test test-gpu demo demo-patch reproduce reproduce-lm reproduce-lm-depth hparams-batch hparams-distill bench \
	clean reproduce-width reproduce-depth reproduce-joint

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" || $(PY) -m pip install -q torch
	$(PY) -m pip install -q -r requirements.txt
	touch $@

test: venv
	$(PY) -m pytest -q tests

test-gpu: venv
	$(PY) -m pytest -q -m cuda -rs tests

# the demo: a ViT's depth grown 2 -> 4 where the laws and the measured switch transfer say (issue 24); depth 6,
# which no plan uses at this scale (results/depth-demo-3s-transfer), is left out to fit 15 minutes
demo: venv
	$(PY) lab/reproduce.py --experiment depth --preset demo --set depths=2,4 --out-dir runs/demo --data-dir $(DATA) $(ARGS)

demo-patch: venv
	$(PY) lab/reproduce.py --experiment patch --preset demo --data-dir $(DATA) $(ARGS)

reproduce: venv
	$(PY) lab/reproduce.py --experiment patch --preset full --data-dir $(DATA) $(ARGS)

# Sec. 6.2: batch-size and training-objective (supervised -> distillation) schedules
hparams-batch: venv
	$(PY) lab/reproduce.py --experiment batch --preset full --data-dir $(DATA) $(ARGS)

hparams-distill: venv
	$(PY) lab/reproduce.py --experiment distill --preset full --data-dir $(DATA) $(ARGS)

# Sec. 6.1 and App. D: width, depth, and patch x width schedules of a growing ViT (expand.py)
reproduce-width reproduce-depth reproduce-joint: reproduce-%: venv
	$(PY) lab/reproduce.py --experiment $* --preset demo --data-dir $(DATA) $(ARGS)

reproduce-lm: venv
	$(PY) lab/reproduce.py --experiment context --preset full $(ARGS)

# the review discussion: LM depth grown 2 -> 4 -> 6 by the laws, on code (the Python standard library)
reproduce-lm-depth: venv
	$(PY) lab/reproduce.py --experiment lm-depth --preset demo $(ARGS)

# Benchmarks compare against timm and transformers, which need torchvision; that lives in its own venv
# (see lab/requirements-bench.txt). The project's own benchmarks run in .venv.
BENCH_VENV ?= .venv-bench
BPY = $(BENCH_VENV)/bin/python

$(BENCH_VENV)/.installed: lab/requirements-bench.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BPY) -m pip install -q -r lab/requirements-bench.txt
	touch $@

bench: venv $(BENCH_VENV)/.installed
	$(BPY) lab/bench/bench_vit_speed.py
	$(BPY) lab/bench/bench_lm_speed.py
	$(PY) lab/bench/bench_fit_laws.py
	$(PY) lab/bench/bench_schedule.py
	$(PY) lab/bench/bench_growth.py
	$(PY) lab/bench/bench_accuracy.py
	$(PY) lab/bench/bench_precision.py --threads 1 --clock cpu
	$(PY) lab/bench/bench_attention.py --threads 1
	$(PY) lab/bench/bench_eval_noise.py
	$(PY) lab/bench/bench_measure.py
	$(PY) lab/bench/bench_precision_accuracy.py --threads 1
	$(PY) lab/bench/bench_images.py all

clean:
	rm -rf runs .pytest_cache __pycache__ tests/__pycache__
