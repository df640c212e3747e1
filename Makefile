# Two commands for users: `make run` and `make test`. Everything else is a step of those.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
DEMO := data/demo.h5
WEIGHTS := data/demo_weights.pt
PORT ?= 8050

.PHONY: run test install demo precompute bench demo-weights demo-sweep clean

# The stamp, not .venv/bin/activate, records a finished install: `python -m venv .venv` (the
# Dockerfile, a user) creates activate newer than requirements.txt with nothing installed yet.
INSTALLED := $(VENV)/.installed

$(INSTALLED): requirements.txt
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	touch $@

install: $(INSTALLED)

$(DEMO): | $(INSTALLED)
	$(PYTHON) -m ainerd_core simulate --out $(DEMO) --times 50 --sectors 18 --size 256 --seed 0

demo: $(DEMO)

# precompute once per dataset build (the stamp is the file's /results group)
precompute: $(DEMO)
	@$(PYTHON) -c "import sys; from ainerd_core.dataset import open_dataset; d=open_dataset('$(DEMO)'); sys.exit(0 if d.read_result('umap') is not None else 1)" 2>/dev/null \
	  || $(PYTHON) -m ainerd_core precompute $(DEMO) --seed 0

run: install precompute
	$(PYTHON) -m dashboard --data data --port $(PORT)

test: install
	$(PYTHON) -m pytest -q

# The shipped demo weights: ONE train-randomized run (ainerd_core/ssl.py) that fine-tunes the
# published checkpoint (../shared, the paper's code archive; data/NOTICE.md) on domain-randomised maps
# generated on the fly: reconstruction + InfoNCE on re-rendered pairs (same dynamics, nuisances
# redrawn), then 500 steps of the decoder alone (encoder frozen: better reconstructions, same latents);
# then every live latent dimension rescaled to unit spread, which leaves the network's
# function unchanged (ainerd_core/latent_scale.py). No data/demo.h5 needed. Writes $(WEIGHTS) and data/demo_weights.curve.json; deterministic
# for the seed and --threads 2; ~50 min on 2 idle cores (docs/model.md, "Shipped demo weights").
# tests/test_demo_weights.py checks that the shipped checkpoint's config equals these arguments:
# change them only together with the file.
PUBLISHED := ../shared/data/ainerd_e031/published_checkpoint_state_dict.pth
DEMO_WEIGHTS_ARGS := --init-from ../shared/data/ainerd_e031/published_checkpoint_state_dict.pth \
	--steps 2000 --decoder-steps 500 --batch-size 16 --objective both --ssl-weight 1 --pairs rerender --ssl-loss infonce \
	--temperature 0.1 --positives pair --lr-max 5e-4 --seed 0 --threads 2 --steps-per-epoch 50
demo-weights: | $(INSTALLED)
	@test -f $(PUBLISHED) || { echo "make demo-weights: $(PUBLISHED) not found (the published checkpoint: put ../shared beside the checkout)"; exit 2; }
	$(PYTHON) -m ainerd_core train-randomized --out $(WEIGHTS) $(DEMO_WEIGHTS_ARGS)
	$(PYTHON) -m ainerd_core equalise-latent $(WEIGHTS)

# the latent-size sweep shown on /model: warm start from the shipped weights, fine-tuned on the demo
# (~28 min on 2 cores). The JSON records the weights' checksum; precompute shows it only beside
# those weights (docs/autoencoder.md "Shipped demo weights"): rerun it after `make demo-weights`.
demo-sweep: $(DEMO)
	$(PYTHON) -m ainerd_core latent-sweep $(DEMO) --out $(basename $(WEIGHTS)).latent_sweep.json \
		--init-from $(WEIGHTS) --init-bottleneck projected --no-augment --dropout 0 --batch-size 8 \
		--lr-base 1e-4 --lr-max 1e-4 --epochs 2 --budget-s 3000

bench: install demo
	$(PYTHON) -m benchmarks.encode

clean:
	rm -rf $(VENV) $(DEMO) instance .pytest_cache
