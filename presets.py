"""The numbers of every experiment reproduce.py runs: one preset per (experiment, size), as data.

An experiment is what the schedule changes (patch, context, batch, distill, width, depth); a preset is its
size: `smoke` checks the plumbing in a minute or two (no claim), `demo` takes minutes on a laptop CPU,
`full` is the paper's comparison at CPU scale. `reproduce.py --set KEY=VALUE` changes one value of a preset.
"""

# patch: patch sizes in the order the runs start (longest first, so two workers finish together); `short`: the
# share of the budget given to static runs whose law only matters early (patch 14 plateaus within the first third;
# four tokens run at a small fraction of the CPU's FLOP rate) or late (patch 2 wins only far past the budget). Only
# the demo shortens runs; in `full` every static run gets the whole budget, so the best static run is a measured
# run, never an extrapolated one.
VIT = dict(model="V64-4", evals=12, fewshot_support=2000, fewshot_query=10000, test_size=10000, batch_size=128,
           warmup=200, lr=1e-3, metric="fewshot10_error", min_flops_frac=0.0, max_extrap_error=0.3,
           allow_bound_laws=False)
HP = dict(VIT, patch=7, evals=20)     # Sec. 6.2: batch size, distillation
PRESETS = {
    "patch": {
        # demo: 2000 query and test images (an evaluation of 14,000 images would cost patch 2's short run 10x its
        # training); one evaluation's std is then ~0.004 instead of ~0.002
        "demo": dict(VIT, patches=(4, 7, 2, 14), flops=6e12, short={14: 0.6, 2: 0.3}, fewshot_query=2000,
                     test_size=2000),
        "full": dict(VIT, patches=(4, 7, 2, 14), flops=2.5e13, evals=14, short={}),
        # a pipeline check in a minute or two (no claim about savings)
        "smoke": dict(VIT, patches=(14, 7, 4, 2), flops=2e11, evals=10, fewshot_query=300, test_size=500, short={},
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
        "full": dict(model="L64-4", contexts=(128, 64, 32, 16), flops=2e13, sched_flops=2.2e13, evals=24,
                     val_tokens=32768, tokens_per_step=4096, data="", metric="val_loss", min_flops_frac=0.02,
                     max_extrap_error=0.3, compare_metric="val_loss_max_context", allow_bound_laws=False),
        "smoke": dict(model="L64-4", contexts=(64, 32, 16, 8), flops=6e11, sched_flops=6.6e11, evals=10, warmup=10,
                      val_tokens=8192, tokens_per_step=4096, data="", metric="val_loss", min_flops_frac=0.02,
                      max_extrap_error=0.3, compare_metric="val_loss_max_context", allow_bound_laws=False),
    },
    "batch": {     # the LR of batch B is lr x lr_scaling(B / smallest B), the scheduled run's too
        "full": dict(HP, batch_sizes=(32, 256), lr_scaling="sqrt", flops=3e13),
        "demo": dict(HP, batch_sizes=(32, 256), lr_scaling="none", flops=3e12, evals=12),
        "smoke": dict(HP, batch_sizes=(32, 128), lr_scaling="none", flops=4e10, evals=10, fewshot_query=300,
                      test_size=500, warmup=10),
    },
    "distill": {   # teacher: a bigger model trained longer ('' = train it here; or a train_vit.py ckpt.pt)
        "full": dict(HP, flops=1e13, teacher="", teacher_model="V96-4", teacher_patch=7, teacher_flops=4e13,
                     temperature=2.0),
        "demo": dict(HP, flops=2e12, teacher="", teacher_model="V96-4", teacher_patch=7, teacher_flops=8e12,
                     temperature=2.0, evals=12),
        "smoke": dict(HP, batch_size=32, flops=4e10, teacher="", teacher_model="V96-4", teacher_patch=7,
                      teacher_flops=5e10, temperature=2.0, evals=10, fewshot_query=300, test_size=500, warmup=10),
    },
    # Sec. 6.1: a model that grows (expand.py); static runs at each width (depth), the schedule's stages carry it
    "width": {"smoke": dict(VIT, patch=7, depth=2, widths=(32, 64), flops=2e11, evals=10, fewshot_query=300,
                            test_size=500, warmup=20)},
    "depth": {"smoke": dict(VIT, patch=7, width=32, depths=(1, 2), flops=2e11, evals=10, fewshot_query=300,
                            test_size=500, warmup=20)},
}
