"""Shared pytest set-up: the repo root on sys.path, one thread per test process (tests are tiny)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# One thread for numpy/scipy's OpenBLAS too, here (set before numpy loads it) and in every process a test starts
# that does not set its own (the pipeline's fit_laws.py and compare.py steps): on a busy 2-core machine scipy's
# L-BFGS-B fits ran ~10x slower with OpenBLAS's threads (a smoke pipeline's compare.py step: 143 s, 14 s with one).
os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; `make test-gpu` runs these (skipped without one)")


def make_images(n, rng, size=16):
    """n tiny images whose class is where a bright square sits (learnable in a few dozen steps), and labels."""
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    for i, c in enumerate(y):                                # a bright square whose place is the class
        r, col = divmod(int(c), 4)
        x[i, r * 4:r * 4 + 4, col * 4:col * 4 + 4] = 250
    return x, y


def make_image_folder(root, splits=("train", "val"), classes=3, per_class=8, rng=None, sizes=((40, 30), (64, 80), (33, 33)),
                      gray=False, fmt="JPEG"):
    """An image folder in the usual layout (root/<split>/c<k>/<i>.jpg), images of mixed sizes whose class is their
    colour (learnable); returns root."""
    from pathlib import Path

    from PIL import Image
    rng = rng or np.random.default_rng(0)
    root = Path(root)
    for split in splits:
        for c in range(classes):
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                w, h = sizes[(c + i) % len(sizes)]
                a = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
                a[..., c % 3] += np.uint8(150)
                img = Image.fromarray(a).convert("L") if gray else Image.fromarray(a)
                img.save(d / f"{i}.{'jpg' if fmt == 'JPEG' else 'png'}", fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return root
