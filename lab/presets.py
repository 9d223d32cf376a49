"""The numbers of every experiment reproduce.py runs: one preset per (experiment, size), as data.

An experiment is what the schedule changes (patch, context, batch, distill, width, depth, lm-depth); a preset is
its size: `smoke` checks the plumbing in a minute or two (no claim), `demo` takes minutes on a laptop CPU,
`full` is the paper's comparison at CPU scale, `long` (context only) contexts up to 512 bytes. `reproduce.py --set KEY=VALUE` changes one value of a preset.
"""

# patch: patch sizes in the order the runs start (longest first, so two workers finish together). Every static run
# gets the whole budget, so the best static run is a measured run, never an extrapolated one.
# image_size: the side the data is resized to at load (0: its own). The demo trains at 24 px, whose patch sizes
# 12, 8, 6 (4, 9, 16 tokens) step by x1.5 and x1.33 in side, as the paper's 60 -> 40 -> 30 do; at 28 px the only
# steps are x2 (14 -> 7 -> 4), and patch 14 -> 7 cost so much at the switch (10-shot error 0.18 -> 0.46 at once,
# 0.23 still 2e12 FLOPs later) that no schedule could gain.
VIT = dict(model="V64-4", evals=12, fewshot_support=2000, fewshot_query=10000, test_size=10000, batch_size=128,
           warmup=200, lr=1e-3, metric="fewshot10_error", min_flops_frac=0.0, max_extrap_error=0.3,
           allow_bound_laws=False, image_size=0)
HP = dict(VIT, patch=7, evals=20)     # Sec. 6.2: batch size, distillation
# Sec. 6.1, App. D: width, depth, patch x width; 2000 query and test images as in the patch demo
# width growth: exactly function-preserving (expand.py preserve=True), the lowest error 1e12 FLOPs after a growth
# over 3 seeds (0.132 [0.130, 0.135]; the paper's gamma=1: 0.144 [0.138, 0.150]; bench_growth_init.py,
# results/growth-init); no re-warm-up (it hurt the preserving growth on both seeds it ran with).
GROW = dict(VIT, head_dim=32, grow_gamma=1.0, grow_preserve=True, grow_depth="copy", rewarm=0, warmup=100,
            fewshot_query=2000, test_size=2000)
# the growing models' budgets and evaluation sizes per preset, the same for width, depth and patch x width
SIZE = {"demo": dict(GROW, flops=3e12),
        "full": dict(GROW, flops=2.5e13, evals=14, fewshot_query=10000, test_size=10000),
        "smoke": dict(GROW, flops=2e11, evals=10, fewshot_query=300, test_size=500, warmup=20)}
# the language model's shared values: 4096 tokens a step, the stdlib corpus ('' = the default), val_loss at the run's
# own context; compare_metric: the loss every run is compared at (the context experiment: at the largest context)
LM = dict(val_tokens=32768, tokens_per_step=4096, data="", vocab_size=0, metric="val_loss", min_flops_frac=0.02,
          max_extrap_error=0.3, compare_metric="val_loss", allow_bound_laws=False)
# the context experiment's batch: constant tokens a step at every context, or `--set batch=tuned` (App. B.5: each
# context trains at the tokens a step of tune_tokens with the lowest val_loss after tune_frac of the budget)
# (vocab_size: of a uint16 token file given as data; 0 for bytes)
CTX = dict(batch="constant", tune_tokens=(2048, 4096, 8192), tune_frac=0.15, vocab_size=0)
# switch-aware planning (issue 24): pilot switches at 10%, 25% and 50% of the budget, each 20% of it long
PILOTS = dict(pilot_points=(0.1, 0.25, 0.5), pilot_stretch=0.2)
PRESETS = {
    "patch": {
        # demo: 2000 query and test images (one evaluation's std ~0.004 instead of ~0.002), to fit in 15 minutes.
        # Chosen from seed-0 runs (the 12 -> 8 crossing near 2-5e12 FLOPs, the switch costs), before any savings
        # were measured; judged on seeds 0, 1, 2 (results/patch-demo-24px*)
        "demo": dict(VIT, image_size=24, patches=(6, 12, 8), flops=6e12, fewshot_query=2000,
                     test_size=2000, **PILOTS),
        "full": dict(VIT, patches=(4, 7, 2, 14), flops=2.5e13, evals=14, **PILOTS),
        # a pipeline check in a minute or two (no claim about savings)
        "smoke": dict(VIT, patches=(14, 7, 4, 2), flops=2e11, evals=10, fewshot_query=300, test_size=500,
                      warmup=10),
        # The paper's own setting (Sec. 3-4, App. B.1), for a GPU: V256-6 at 120 px (prepare_images.py), underlying
        # patch 12 and position-embedding grid 8, the scheduler's patch sizes, Table 1 (AdamW (0.9, 0.999), weight
        # decay 0.01, label smoothing 0.2, 1000 warm-up steps, clip 1.0: the trainer's defaults but the warm-up).
        # Batch size and LR are not in Table 1 (tuned per model, Fig. 13): 1024 and 1e-3 are our choice. 10-shot
        # on ImageNet-1k: reproduce.py --fewshot-data; a support pool of 50,000 holds >= 10 images of each of its
        # 1000 classes. The budget: train_vit.py --plan / reproduce.py --plan (README, "A GPU recipe").
        "paper": dict(VIT, model="V256-6", patches=(60, 40, 30, 24, 20, 15, 12, 10, 8), flops=1e18, evals=20,
                      short={}, batch_size=1024, lr=1e-3, warmup=1000, base_patch=12, posemb_grid=8,
                      fewshot_support=50000, fewshot_query=10000, test_size=10000),
    },
    "context": {   # the same tokens a step at every context; scheduled runs get 10% more (sched_flops)
        # demo, with pilots: chosen by timing before any run, not by savings. L64-4 trains 4096 tokens a step at
        # 2.4-3.4e10 FLOP/s on one thread of 2 busy cores (steps timed alone: 0.19-0.22 s at contexts 16-128; a
        # context-64 run of 4e12 FLOPs beside two other runs: 3.1 min, 165 s of it training), so 3e12 FLOPs is 1.7-2.3
        # min a static run. Three contexts give 3 transitions x 3 pilot points: a seed trains 3 static runs, 9 pilots of
        # 0.2 x the budget and 5 scheduled runs of 1.1 x it (law, transfer, linear, log, random), ~10.3 static runs'
        # compute; 3 seeds at --jobs 2: ~32-41 min with start-ups, evaluations (16384 tokens, 0.26 s), fits and the
        # report. 16, 32, 64: the full preset's laws cross within a few 1e12 (16 wins until ~5e11, 32 until ~2e12; 128
        # only past ~5e12). 40 warm-up steps (2.7e11 FLOPs at contexts 16 and 32) end before the first pilot point (10%
        # of the budget).
        "demo": dict(LM, model="L64-4", contexts=(64, 32, 16), flops=3e12, sched_flops=3.3e12, evals=20,
                     val_tokens=16384, warmup=40, compare_metric="val_loss_max_context", **CTX, **PILOTS),
        "full": dict(model="L64-4", contexts=(128, 64, 32, 16), flops=2e13, sched_flops=2.2e13, evals=24,
                     val_tokens=32768, tokens_per_step=4096, data="", metric="val_loss", min_flops_frac=0.02,
                     max_extrap_error=0.3, compare_metric="val_loss_max_context", allow_bound_laws=False, **CTX),
        "smoke": dict(model="L64-4", contexts=(64, 32, 16, 8), flops=6e11, sched_flops=6.6e11, evals=10, warmup=10,
                      val_tokens=8192, tokens_per_step=4096, data="", metric="val_loss", min_flops_frac=0.02,
                      max_extrap_error=0.3, compare_metric="val_loss_max_context", allow_bound_laws=False,
                      **dict(CTX, tune_frac=0.05)),
        # where context may pay (issue 16): contexts to 512 bytes on a wider model (attention 33% of a token's block
        # FLOPs at 512, the paper's 768-wide model at 2048 tokens has 25%). Chosen from the earlier results (L64 gains
        # nothing past 128 bytes in 2e13), not measured: about 0.8 s a step at 512 on one core, hours for 3 seeds.
        "long": dict(model="L128-4", contexts=(512, 256, 128, 64, 32), flops=4e13, sched_flops=4.4e13, evals=24,
                     val_tokens=32768, tokens_per_step=4096, data="", metric="val_loss", min_flops_frac=0.02,
                     max_extrap_error=0.3, compare_metric="val_loss_max_context", allow_bound_laws=False, **CTX),
    },
    "batch": {     # the LR of batch B is lr x lr_scaling(B / smallest B), the scheduled run's too
        "full": dict(HP, batch_sizes=(32, 256), lr_scaling="sqrt", flops=3e13),
        # demo: 50 warm-up steps (200 at batch 256 were a third of its 3e12 FLOPs, leaving fit_laws.py 3 points)
        "demo": dict(HP, batch_sizes=(32, 256), lr_scaling="none", flops=3e12, evals=16, warmup=50),
        "smoke": dict(HP, batch_sizes=(32, 128), lr_scaling="none", flops=4e10, evals=10, fewshot_query=300,
                      test_size=500, warmup=10),
    },
    "distill": {   # teacher: a bigger model trained longer ('' = train it here; or a train_vit.py ckpt.pt)
        "full": dict(HP, flops=1e13, teacher="", teacher_model="V96-4", teacher_patch=7, teacher_flops=4e13,
                     temperature=2.0),
        "demo": dict(HP, flops=2e12, teacher="", teacher_model="V96-4", teacher_patch=7, teacher_flops=8e12,
                     temperature=2.0, evals=16, warmup=50),        # 50 warm-up steps: as the batch demo
        "smoke": dict(HP, batch_size=32, flops=4e10, teacher="", teacher_model="V96-4", teacher_patch=7,
                      teacher_flops=5e10, temperature=2.0, evals=10, fewshot_query=300, test_size=500, warmup=10),
    },
    # Sec. 6.1: a model that grows (expand.py); static runs at each width (depth), the schedule's stages carry it.
    # head_dim is kept fixed by growth, so every static run uses it too (flexivit.build would give width 128 and up
    # heads of 64); grow_gamma, grow_preserve, grow_depth, rewarm: train_vit.py's growth flags (Fig. 17, App. C).
    # Patch 14 in the demos: at a few 1e12 FLOPs it is the best static patch on Fashion-MNIST (results/patch-demo).
    "width": {
        "demo": dict(SIZE["demo"], patch=14, depth=4, widths=(32, 64, 128), **PILOTS),
        "full": dict(SIZE["full"], patch=7, depth=4, widths=(64, 128, 256), **PILOTS),
        "smoke": dict(SIZE["smoke"], patch=7, depth=2, widths=(32, 64)),
    },
    # depth grows by copying a neighbour block (grow_depth="copy", in GROW), not by identity blocks: over 3 seeds the
    # demo's linear-spaced growth saved 30.8% [25.7, 35.9] with copies and never reached the target with
    # identities (results/depth-demo-3s, and results/depth-demo-3s-preserve, made when --grow-preserve also set
    # the depth growth)
    # pilot_points: the fractions of the budget where each static run keeps a checkpoint, a pilot switch starts
    # from it and trains pilot_stretch x the budget (lab/transfer.py); set before any pilot ran, not tuned on savings
    "depth": {
        "demo": dict(SIZE["demo"], patch=14, width=64, depths=(2, 4, 6), **PILOTS),
        "full": dict(SIZE["full"], patch=7, width=128, depths=(4, 8, 12), **PILOTS),
        "smoke": dict(SIZE["smoke"], patch=7, width=32, depths=(1, 2), **PILOTS),
    },
    # App. D, Fig. 19: patch x width; the law schedule picks a monotone path (patch never grows, width never
    # shrinks); width-only and patch-only schedules on sub-grids of the same laws are trained beside it
    "joint": {
        "demo": dict(SIZE["demo"], patches=(14, 7), depth=4, widths=(32, 64, 128)),
        "full": dict(SIZE["full"], patches=(14, 7, 4), depth=4, widths=(64, 128, 256)),
        "smoke": dict(SIZE["smoke"], patches=(14, 7), depth=2, widths=(32, 64)),
    },
    # the review discussion: an LM whose depth grows (expand.py, exact insertion) on code, the Python standard
    # library as bytes; static runs at each depth (--depth), the schedule's stages grow the model. evals=32
    # log-spaced: set when a schedule's last stage got no evaluations of its own (train_lm.py now adds 5 inside
    # each later stage, as train_vit.py does); kept, so the runs in results/ stay comparable. rewarm: the LR
    # re-warmed over 50 steps after a growth, expand.py's advice (~5% of the steps), set before any run, not tuned
    # on savings.
    "lm-depth": {
        "demo": dict(LM, width=64, depths=(2, 4, 6), context=128, flops=3e12, sched_flops=3.3e12, evals=32,
                     val_tokens=8192, warmup=50, rewarm=25),
        "full": dict(LM, width=64, depths=(2, 4, 6), context=128, flops=2e13, sched_flops=2.2e13, evals=32,
                     rewarm=50),
        "smoke": dict(LM, width=32, depths=(1, 2, 3), context=32, flops=2e11, sched_flops=2.2e11, evals=10,
                      val_tokens=4096, warmup=10, rewarm=5),
    },
}
