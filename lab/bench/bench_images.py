"""The image pipeline's numbers (issue 17): preparation speed, memory-mapped training speed and memory, the planner.

    python bench/bench_images.py prep        # prepare_images.py on >= 5000 generated JPEGs of mixed sizes, 2 workers
    python bench/bench_images.py speed       # training steps: memory-mapped file vs in-memory tensors, interleaved
    python bench/bench_images.py rss         # resident memory training from files of 1x and 20x the trainer's RAM
    python bench/bench_images.py planner     # train_vit.py --plan against the same run, back to back

Each prints its figures and writes results/images/<what>.json. Run them under the same conditions you report
(the README's: `nice -n 15`, OMP_NUM_THREADS=1, one thread, on a shared 2-core machine).
"""
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
WORK = ROOT / "runs" / "bench-images"
RESULTS = ROOT / "results" / "images"
FMNIST = "/usr/share/datasets/fashion-mnist"


def record(name, obj):
    from lab import write_json
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"{name}.json", obj)
    print(json.dumps(obj, indent=1))


def prep(n_images=5000, workers=2):
    """Images decoded per second by prepare_images.py at 120 px with `workers` processes, on JPEGs of mixed sizes
    (ImageNet-like: 160-640 px a side), generated once."""
    from conftest import make_image_folder
    src, out = WORK / "jpegs", WORK / "jpegs-120"
    sizes = ((500, 375), (640, 480), (333, 500), (160, 120), (400, 400), (250, 188), (500, 333))
    if not (src / "done").exists():
        make_image_folder(src, splits=("train",), classes=10, per_class=n_images // 10, sizes=sizes)
        (src / "done").write_text("")
    subprocess.run(["rm", "-rf", str(out)], check=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "lab" / "prepare_images.py"), "--src", str(src), "--out", str(out),
                    "--splits", "train", "--workers", str(workers), "--no-progress"], check=True)
    seconds = time.perf_counter() - t
    mean_px = np.mean([w * h for w, h in sizes])
    record("prep", {"images": n_images, "workers": workers, "resolution": 120, "seconds": seconds,
                    "images_per_s": n_images / seconds, "mean_source_pixels": mean_px,
                    "cpu_count": os.cpu_count(), "note": "process wall time including the interpreter start"})


def fmnist_prepared():
    """Fashion-MNIST written as a prepared folder (the same images, no JPEG round trip)."""
    import data
    from lab import write_json
    out = WORK / "fmnist-prepared"
    if (out / "val.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    x, y, tx, ty = data.load_dataset(FMNIST)
    for split, a, b in (("train", x, y), ("val", tx, ty)):
        d, lab, meta = data.paths(out, split)
        arr = a.permute(0, 2, 3, 1).contiguous().numpy()
        d.write_bytes(arr.tobytes())
        with open(lab, "wb") as f:
            np.save(f, b.numpy().astype(np.int32))
        write_json(meta, {"version": data.VERSION, "kind": data.KIND, "split": split,
                                  "shape": list(arr.shape), "classes": [str(i) for i in range(10)],
                                  "resolution": 28, "channels": 1, "bytes": arr.nbytes})
    return out


def make_run(data_dir, extra=()):
    import runtime
    import train_vit
    flags = ["--data-dir", str(data_dir), "--model", "V64-4", "--patch", "7", "--steps", "100000", "--threads", "1",
             "--fewshot-support", "2000", "--test-size", "2000", "--fewshot-query", "2000", "--train-size", "0",
             "--out-dir", str(WORK / "unused"), "--no-progress", *extra]
    cfg = runtime.parse(train_vit.Config, "train_vit.py", flags)
    run = train_vit.Run(cfg)
    run.restore()
    run.model.to(run.device).train()
    run.opt = train_vit.make_optimizer(run.model, cfg, run.device)
    return run


def speed(rounds=40, steps=5):
    """Training-step time from the memory-mapped file over in-memory tensors: the same model and data, one process,
    one thread, rounds interleaved (A B B A ...); the median of the per-round ratios, in this process's CPU time
    (user + system: page faults count; other processes on a shared machine do not)."""
    import torch
    import train_vit
    torch.manual_seed(0)
    runs = {"memory": make_run(FMNIST), "memmap": make_run(fmnist_prepared())}
    runs["memmap"].model.load_state_dict(runs["memory"].model.state_dict())
    shape = runs["memory"].stages[0]
    per = {k: [] for k in runs}
    for r in range(rounds):
        for k in (("memory", "memmap") if r % 2 == 0 else ("memmap", "memory")):
            run = runs[k]
            t = time.process_time()
            for _ in range(steps):
                train_vit.train_step(run, run.model, shape, 7)
                run.state.step, run.state.samples = run.state.step + 1, run.state.samples + 128
            per[k].append((time.process_time() - t) / steps)
    ratios = [b / a for a, b in zip(per["memory"], per["memmap"])]
    record("speed", {"clock": "process CPU time", "model": "V64-4", "patch": 7, "batch": 128, "threads": 1, "rounds": rounds, "steps_per_round": steps,
                     "memory_ms": [1e3 * s for s in per["memory"]], "memmap_ms": [1e3 * s for s in per["memmap"]],
                     "median_ratio_memmap_over_memory": statistics.median(ratios),
                     "ratio_min": min(ratios), "ratio_max": max(ratios)})


def sparse_prepared(rows, name):
    """A prepared folder of `rows` 28x28 images: a sparse data file (zeros, no disk) and real random labels."""
    import data
    from lab import write_json
    out = WORK / name
    out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", rows), ("val", 10000)):
        d, lab, meta = data.paths(out, split)
        with open(d, "wb") as f:
            f.truncate(n * 784)
        with open(lab, "wb") as f:
            np.save(f, np.random.default_rng(0).integers(0, 10, n).astype(np.int32))
        write_json(meta, {"version": data.VERSION, "kind": data.KIND, "split": split,
                                  "shape": [n, 28, 28, 1], "classes": [str(i) for i in range(10)],
                                  "resolution": 28, "channels": 1, "bytes": n * 784})
    return out


def rss_child(data_dir, steps):
    """In a fresh process: set up as train_vit does, train `steps` steps, print the memory it holds."""
    import train_vit
    run = make_run(data_dir)
    shape = run.stages[0]
    status = lambda: {k: int(v.split()[0]) * 1024 for k, v in (ln.split(":", 1) for ln in open("/proc/self/status"))
                      if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}
    before = status()
    for _ in range(steps):
        train_vit.train_step(run, run.model, shape, 7)
        run.state.step, run.state.samples = run.state.step + 1, run.state.samples + 128
    print(json.dumps({"before_steps": before, "after_steps": status(), "rows": len(run.train_x)}))


def rss(steps=100):
    """Resident memory after `steps` training steps from a sparse prepared file of 1x and of 20x the trainer's RAM
    (its peak resident set on the 1x file), each in a fresh process."""
    probe = sparse_prepared(60000, "sparse-probe")
    ram = json.loads(subprocess.run([sys.executable, __file__, "rss-child", str(probe), "20"], check=True,
                                    capture_output=True, text=True).stdout.splitlines()[-1])["after_steps"]["VmHWM"]
    out = {"trainer_ram_bytes": ram, "steps": steps}
    for mult in (1, 20):
        rows = mult * ram // 784
        folder = sparse_prepared(rows, f"sparse-{mult}x")
        res = json.loads(subprocess.run([sys.executable, __file__, "rss-child", str(folder), str(steps)], check=True,
                                        capture_output=True, text=True).stdout.splitlines()[-1])
        out[f"{mult}x"] = {"file_bytes": rows * 784, **res}
    a, b = out["1x"]["after_steps"], out["20x"]["after_steps"]
    out["rss_ratio_20x_over_1x"] = b["VmRSS"] / a["VmRSS"]
    out["peak_ratio_20x_over_1x"] = b["VmHWM"] / a["VmHWM"]
    record("rss", out)


def planner_vs_real(target=120.0):
    """train_vit.py --plan, then the same run for real, back to back in the same conditions: the planned time
    against the run's process wall time (and the planned training seconds against the log's "wall"). The budget
    is sized from a first plan so that the run takes about `target` seconds here, evaluations ~15% of it."""
    out_dir = WORK / "planner-run"
    subprocess.run(["rm", "-rf", str(out_dir)], check=True)
    base = [sys.executable, str(ROOT / "train_vit.py"), "--model", "V64-4", "--patch", "7", "--threads", "1",
            "--evals", "8", "--test-size", "2000", "--fewshot-query", "2000", "--train-size", "1000",
            "--out-dir", str(out_dir), "--no-progress"]

    def plan(flops):
        text = subprocess.run([*base, "--flops", repr(flops), "--plan"], check=True, capture_output=True,
                              text=True).stdout
        total = next(ln for ln in text.splitlines() if "total:" in ln)
        return text, {k: parse_seconds(total.split(f"{k} ")[1].split(" +")[0].split(";")[0].split(" =")[0])
                      for k in ("time", "training")}

    probe = 2e11
    _, t = plan(probe)
    flops = probe * max(target - (t["time"] - t["training"]), 0.5 * target) / t["training"]
    text, t = plan(flops)
    print(text)
    start = time.perf_counter()
    subprocess.run([*base, "--flops", repr(flops)], check=True, capture_output=True)
    real = time.perf_counter() - start
    log = [json.loads(ln) for ln in (out_dir / "log.jsonl").read_text().splitlines()]
    record("planner", {"flops": flops, "plan": text, "planned_s": t["time"], "real_s": real,
                       "error": t["time"] / real - 1, "planned_train_s": t["training"], "real_train_s": log[-1]["wall"],
                       "train_error": t["training"] / log[-1]["wall"] - 1, "load_average": os.getloadavg(),
                       "conditions": f"plan then run back to back, 1 thread, nice {os.nice(0)}, on {os.cpu_count()} cores"})


def parse_seconds(text):
    value, unit = text.split()
    return float(value) * {"s": 1, "min": 60, "h": 3600}[unit]


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what == "rss-child":
        rss_child(sys.argv[2], int(sys.argv[3]))
    else:
        for name, fn in (("prep", prep), ("speed", speed), ("rss", rss), ("planner", planner_vs_real)):
            if what in (name, "all"):
                fn()
