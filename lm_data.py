"""Text data for train_lm.py (paper Sec. 5): a token corpus split into train / validation, random training
batches, and the validation loss.

    train, val, vocab, name = load_corpus()                      # the Python standard library, as bytes
    x, y = get_batch(train, step, batch=64, context=64, seed=0)   # [64, 64] inputs, targets shifted by one
    x, y = get_batch(train, step, 64, 64, 0, rows=(0, 32))        # rank 0's half of that same global batch
    loss = evaluate(model, val, context=64, val_tokens=32768, batch_tokens=4096, device="cpu")

By default the corpus is the Python standard library's .py files as bytes (vocabulary 256): real code on every
machine with Python, no download. `data` also takes a text file or folder (bytes), or a uint16 token file
*.bin with `vocab_size`. A folder is split into train and validation by a hash of each file's relative path
and cached under `cache_dir` as two uint8 files (memory-mapped); a single file is split by position (its tail
is the validation split).

A step's windows start at random positions drawn from a generator seeded by (seed, step) only: a resumed run
sees the same batches, and under data parallelism (dist.py) each process takes its rows of the same global
batch, so the data order does not depend on the number of processes.

Validation: the first val_tokens tokens of the validation split in windows of the context, so every context
predicts the same tokens (the paper truncates the same samples to each model's context).
"""
import hashlib
import json
import os
import sysconfig
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from runtime import UserError


class DataError(UserError):
    """Unusable data: train_lm.py prints one line and exits with code 2."""


def load_corpus(data="", glob="", vocab_size=0, val_fraction=0.05, cache_dir="runs/.cache"):
    """-> (train tokens, validation tokens, vocabulary size, a name for the data) as numpy arrays."""
    path = Path(data or sysconfig.get_paths()["stdlib"])
    if path.is_dir():
        return load_folder(path, glob or ("*" if data else "*.py"), val_fraction, cache_dir)
    if not path.is_file():
        raise DataError(f"--data {data}: no such file or folder")
    vocab, dtype = (vocab_size, np.uint16) if path.suffix == ".bin" else (256, np.uint8)
    if path.suffix == ".bin" and (vocab <= 0 or path.stat().st_size % 2):
        raise DataError(f"--data {data}: a uint16 token file needs --vocab-size (and an even byte count)")
    tokens = np.memmap(path, dtype=dtype, mode="c") if path.stat().st_size else np.zeros(0, dtype)
    if len(tokens) == 0:
        raise DataError(f"--data {data}: the corpus is empty")
    if path.suffix == ".bin" and int(tokens.max()) >= vocab:
        raise DataError(f"--data {data}: token id {int(tokens.max())} >= --vocab-size {vocab}")
    cut = len(tokens) - int(len(tokens) * val_fraction)
    return tokens[:cut], tokens[cut:], vocab, str(path.resolve())


def load_folder(root, pattern, val_fraction, cache_dir):
    """A folder's files as bytes, split by a hash of the relative path, cached as two uint8 files."""
    skip = {"site-packages", "dist-packages", "__pycache__"}
    files = sorted(f for f in root.rglob(pattern) if f.is_file() and not skip & set(f.relative_to(root).parts))
    names = [f.relative_to(root).as_posix() for f in files]
    stats = [(n, f.stat().st_size, f.stat().st_mtime_ns) for n, f in zip(names, files)]
    if sum(size for _, size, _ in stats) == 0:
        raise DataError(f"--data {root}: the corpus is empty (no non-empty files matching {pattern!r})")
    key = hashlib.md5(json.dumps([str(root.resolve()), val_fraction, stats]).encode()).hexdigest()[:16]
    paths = [Path(cache_dir) / f"corpus-{key}.{part}.u8" for part in ("train", "val")]
    if not all(p.exists() for p in paths):
        in_val = [int(hashlib.md5(n.encode()).hexdigest()[:8], 16) < val_fraction * 2**32 for n in names]
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        for path, want in zip(paths, (False, True)):
            with open(f"{path}.{os.getpid()}.tmp", "wb") as out:         # runs (and ranks) may start side by side
                for f, v in zip(files, in_val):
                    if v == want:
                        out.write(f.read_bytes())
            os.replace(f"{path}.{os.getpid()}.tmp", path)
    train, val = (np.memmap(p, dtype=np.uint8, mode="c") if p.stat().st_size else np.zeros(0, np.uint8)
                  for p in paths)
    return train, val, 256, f"{root.resolve()}:{pattern}"


def get_batch(tokens, step, batch, context, seed, rows=None):
    """Random windows of context+1 tokens -> (inputs, targets) [batch, context], a function of (seed, step)
    only; `rows` (lo, hi) takes rows lo..hi-1 of that global batch (one process's shard)."""
    starts = np.random.default_rng([seed, step]).integers(0, len(tokens) - context, size=batch)
    if rows is not None:
        starts = starts[rows[0]:rows[1]]
    xy = torch.from_numpy(tokens[starts[:, None] + np.arange(context + 1)].astype(np.int64))
    return xy[:, :-1], xy[:, 1:]


@torch.no_grad()
def evaluate(model, val, context, val_tokens, batch_tokens, device, autocast=nullcontext()):
    """Mean next-token loss over the first val_tokens tokens of val, in windows of `context` tokens."""
    n, rows = val_tokens // context, max(1, batch_tokens // context)
    xy = torch.from_numpy(val[: n * context + 1].astype(np.int64))
    x, y = xy[:-1].view(n, context), xy[1:].view(n, context)
    total = 0.0
    for i in range(0, n, rows):
        with autocast:
            logits = model(x[i:i + rows].to(device))
        total += F.cross_entropy(logits.float().flatten(0, 1), y[i:i + rows].to(device).flatten(),
                                 reduction="sum").item()
    return total / (n * context)
