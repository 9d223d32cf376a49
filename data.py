"""Image data for train_vit.py: loading, augmentation and a resumable data order (paper Sec. 3, App. B).

    from data import load_dataset, normalize      # (train_vit re-exports both)
    train_x, train_y, test_x, test_y = load_dataset("/usr/share/datasets/fashion-mnist")
    x = normalize(train_x[:128])                  # uint8 [B, C, H, W] -> float in [-1, 1]

Formats (detected from --data-dir): Fashion-MNIST / MNIST IDX files, gzipped or not (Debian/Ubuntu:
`apt-get install dataset-fashion-mnist` puts them in /usr/share/datasets/fashion-mnist); CIFAR-10 /
CIFAR-100 python pickle batches; an .npz with x_train, y_train, x_test, y_test (uint8 images [N, H, W],
[N, H, W, C] or [N, C, H, W], integer labels); a folder prepared by prepare_images.py (any image folder,
e.g. ImageNet at 120 px), read memory-mapped through prepared.py, never loaded, with a data order computed row
by row (feistel_permutation) so that memory does not grow with the dataset. Images stay uint8 until a batch is
drawn.

Augmentation (the paper: random crops and horizontal flips) runs on a whole batch as tensor ops:
a random crop with zero padding (2 px below 32 px, i.e. Fashion-MNIST; 4 px from 32 px, i.e. CIFAR)
and a horizontal flip, on by default for both (clothes and CIFAR objects are left-right symmetric;
turn it off for digits or text). The data order is an endless stream of per-epoch permutations, each
seeded by (seed, epoch): the number of examples seen is the whole data position, so a resumed run
draws the same batches. Under torchrun each process takes its rows of the same global batch (dist.py), with
the crops and flips drawn for the global batch. Every random draw comes from a generator seeded by a key such as
("augment", seed, step), never from global state.
"""
import functools
import gzip
import hashlib
import math
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import prepared
from runtime import UserError


def _read_idx(path):
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
        ndim = raw[3]
        dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    except (OSError, EOFError, IndexError, struct.error, zlib.error) as e:
        raise UserError(f"cannot read {path} ({e}); download it again") from None
    size = 4 + 4 * ndim + math.prod(dims)
    if raw[:3] != b"\0\0\x08" or len(raw) != size:
        raise UserError(f"{path} is truncated or not an IDX file ({len(raw)} bytes, expected {size}); "
                        "download it again")
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def _read_cifar(d):
    d = next((s for s in (d / "cifar-10-batches-py", d / "cifar-100-python") if s.is_dir()), d)
    ten = (d / "data_batch_1").exists()
    parts = ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]) if ten else (["train"], ["test"])
    out = []
    for names in parts:
        xs, ys = [], []
        for name in names:
            try:
                with open(d / name, "rb") as f:
                    b = pickle.load(f, encoding="bytes")
                xs.append(torch.from_numpy(np.asarray(b[b"data"], np.uint8).reshape(-1, 3, 32, 32)))
                ys.append(torch.as_tensor(b[b"labels" if ten else b"fine_labels"]))
            except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError) as e:
                raise UserError(f"cannot read CIFAR batch {d / name} ({e!r}); download it again") from None
        out += [torch.cat(xs), torch.cat(ys)]
    return out


def _read_npz(path):
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path) as z:
            if missing := [k for k in keys if k not in z.files]:
                raise UserError(f"{path} lacks {', '.join(missing)} (needs arrays {', '.join(keys)})")
            arrays = [z[k] for k in keys]
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
        if isinstance(e, UserError):
            raise
        raise UserError(f"cannot read {path}: truncated or not an .npz ({e})") from None
    out = []
    for k, a in zip(keys, arrays):
        if k[0] == "x":
            if a.dtype != np.uint8:
                raise UserError(f"{path}: {k} must be uint8 images, got {a.dtype}")
            channels_last = a.ndim == 4 and a.shape[-1] in (1, 3) and a.shape[1] not in (1, 3)
            a = a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2) if channels_last else a
        out.append(torch.from_numpy(np.ascontiguousarray(a)))
    return out


def load_dataset(data_dir, dataset="auto"):
    """(train_x, train_y, test_x, test_y): uint8 images [N, C, H, W] and int64 labels."""
    p = Path(data_dir)
    if not p.exists():
        raise UserError(f"no data at {p}: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or pass "
                        "--data-dir with the four Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...), "
                        "CIFAR batches or an .npz")
    if dataset == "prepared" or (dataset == "auto" and prepared.is_prepared(p)):
        return prepared.load_prepared(p)               # memory-mapped, never loaded (prepare_images.py)
    if dataset == "auto":
        dataset = "npz" if p.is_file() else "cifar" if any(
            (p / n).exists() for n in ("data_batch_1", "train", "cifar-10-batches-py", "cifar-100-python")) else "idx"
    if dataset == "npz":
        x, y, tx, ty = _read_npz(p)
    elif dataset == "cifar":
        x, y, tx, ty = _read_cifar(p)
    else:
        files = []
        for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
            f = next((f for f in (p / stem, p / f"{stem}.gz") if f.exists()), None)
            if f is None:
                raise UserError(f"{p} has no {stem}[.gz]: pass --data-dir with the four Fashion-MNIST IDX files, "
                                "CIFAR batches or an .npz (or `apt-get install dataset-fashion-mnist`)")
            files.append(f)
        x, y, tx, ty = (_read_idx(f) for f in files)
        x, tx = x[:, None], tx[:, None]
    if x.ndim != 4 or x.shape[2] != x.shape[3] or x.shape[1:] != tx.shape[1:] or len(x) != len(y) or len(tx) != len(ty):
        raise UserError(f"{p}: need square images [N, C, H, W] with one label each; "
                        f"got {tuple(x.shape)}, {tuple(tx.shape)}")
    if len(x) == 0 or len(tx) == 0:
        raise UserError(f"{p}: the training and the test split each need at least one image")
    return x, _labels(y, p, "training"), tx, _labels(ty, p, "test")


def _labels(y, path, split):
    """Class labels as int64 in [0, 65536): integers, not negative; anything else is named in one line."""
    if y.ndim != 1 or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise UserError(f"{path}: the {split} labels must be a 1-d integer array, got {y.dtype} {tuple(y.shape)}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= 65536):
        raise UserError(f"{path}: the {split} labels must be class indices in [0, 65536), "
                        f"got {int(y.min())}..{int(y.max())}")
    return y.long()


def resize_images(x, size, chunk=4096):
    """uint8 images [N, C, H, W] -> [N, C, size, size]: bilinear, antialiased when shrinking, rounded back to
    uint8; in chunks, so the float copy stays small. The same side returns `x` itself."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = torch.empty((len(x), x.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, len(x), chunk):
        part = F.interpolate(x[i:i + chunk].float(), size=(size, size), mode="bilinear",
                             align_corners=False, antialias=True)
        out[i:i + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def normalize(x):
    """uint8 images -> float in [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


def key_seed(*key):
    return int(hashlib.sha256(repr(key).encode()).hexdigest()[:15], 16)


def generator(*key):
    """A CPU torch.Generator seeded by a key such as ("perm", seed, epoch): a resume redraws the same numbers."""
    return torch.Generator().manual_seed(key_seed(*key))


@functools.lru_cache(maxsize=2)
def permutation(n, seed, epoch):
    return torch.randperm(n, generator=generator("perm", seed, epoch))


def batch_indices(n, samples, batch_size, seed, streamed=False):
    """The next batch of an endless stream of per-epoch permutations; `samples` (examples seen) is the position.
    streamed: each permutation is computed row by row (feistel_permutation), never held: memory O(batch), not
    O(n), for prepared files of any size; otherwise torch.randperm (the in-memory formats' order, as before)."""
    parts = []
    while batch_size > 0:
        epoch, offset = divmod(samples, n)
        take = min(batch_size, n - offset)
        parts.append(feistel_permutation(n, seed, epoch, offset, take) if streamed
                     else permutation(n, seed, epoch)[offset:offset + take])
        samples, batch_size = samples + take, batch_size - take
    return torch.cat(parts)


def _mix(x, key):
    """A 64-bit hash (splitmix64's finaliser) of x and a round key, vectorised over a uint64 array."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(key)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def feistel_permutation(n, seed, epoch, start, count, rounds=6):
    """Rows start..start+count of a permutation of range(n) seeded by (seed, epoch), computed without holding it:
    a balanced Feistel network on the smallest even number of bits that covers n is a bijection of [0, 2^bits);
    cycle-walking (apply it again while the value is >= n) restricts it to a bijection of [0, n)."""
    half = max(1, (max(n - 1, 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    keys = [key_seed("stream", seed, epoch, r) for r in range(rounds)]

    def once(x):
        left, right = x >> np.uint64(half), x & mask
        for k in keys:
            left, right = right, left ^ (_mix(right, k) & mask)
        return (left << np.uint64(half)) | right

    x = once(np.arange(start, start + count, dtype=np.uint64))
    while (out := x >= np.uint64(n)).any():
        x[out] = once(x[out])
    return torch.from_numpy(x.astype(np.int64))


def eval_sets(train_x, train_y, test_x, test_y, support, query, test_size, device):
    """Fixed evaluation sets, the same for every run and seed: a k-shot support pool of `support` training
    images, `query` k-shot query images and `test_size` top-1 test images from the test set."""
    sup = torch.randperm(len(train_x), generator=generator("support"))[:support]
    qry = torch.randperm(len(test_x), generator=generator("query"))[:query]
    fewest = int(torch.bincount(train_y[sup], minlength=int(train_y.max()) + 1).min())
    if fewest < 10:
        raise UserError(f"--fewshot-support {support} holds only {fewest} images of some class; "
                        "10-shot needs 10 per class: raise --fewshot-support")
    return {"fewshot": [normalize(train_x[sup]).to(device), train_y[sup].to(device),
                        normalize(test_x[qry]).to(device), test_y[qry].to(device)],
            "test": (test_x[:test_size].to(device), test_y[:test_size].to(device)),
            "shots": tuple(k for k in (1, 5, 10, 25) if k <= fewest)}


def train_subset(n, size, seed=0, streamed=False):
    """Indices of a fixed subset of `size` of the n training images (all if fewer), chosen once by `seed` and
    the same for every run: train_error is measured on these, un-augmented, beside test_error."""
    return draw(n, size, streamed, "train_subset", seed)


def draw(n, size, streamed, *key):
    """The first `size` of a permutation of range(n) seeded by `key`: torch.randperm for the in-memory formats (as
    before), the streamed Feistel permutation for a prepared file (memory O(size), not O(n))."""
    if streamed:
        return feistel_permutation(n, key_seed(*key), 0, 0, min(size, n))
    return torch.randperm(n, generator=generator(*key))[:size]


def eval_images(train_x, train_y, test_x, test_y, support, query, test_size, train_size, device, fewshot=None):
    """Fixed image sets for eval_fewshot.evaluate_all, uint8 on `device` (normalised batch by batch there):
    "support": the k-shot pool (the same `support` training images as eval_sets'), "test": the first
    `test_size` test images, "query": indices into "test" of `query` k-shot query images (None: all of them,
    the usual choice: one feature pass serves both metrics), "train": `train_size` training images
    (train_subset; None if 0), "shots": the k with at least k pool images in every class.
    fewshot=(pool x, pool y, query x, query y), another dataset's (train_vit.py --fewshot-data): the k-shot pool is
    drawn from its pool and "query_set" holds `query` of its query images (top-1 test_error stays on test_x)."""
    if fewshot is not None:
        ev = eval_images(*fewshot, support, query, query, 0, device)
        ev = {**ev, "query_set": ev["test"] if ev["query"] is None else tuple(t[ev["query"]] for t in ev["test"])}
        n_test = min(test_size, len(test_x))
        sub = train_subset(len(train_x), train_size, streamed=not torch.is_tensor(train_x)) if train_size > 0 else None
        return {**ev, "query": None, "test": (test_x[:n_test].to(device), test_y[:n_test].to(device)),
                "train": None if sub is None else (train_x[sub].to(device), train_y[sub].to(device))}
    streamed = not torch.is_tensor(train_x)                       # a prepared file (prepared.Images)
    sup = draw(len(train_x), support, streamed, "support")
    fewest = int(torch.bincount(train_y[sup], minlength=int(train_y.max()) + 1).min())
    if fewest < 10:
        raise UserError(f"--fewshot-support {support} holds only {fewest} images of some class; "
                        "10-shot needs 10 per class: raise --fewshot-support")
    n_test = min(test_size, len(test_x))
    qry = None if query >= n_test else torch.randperm(n_test, generator=generator("query"))[:query].to(device)
    test_x, test_y = test_x[:n_test], test_y[:n_test]                # a prepared file: these rows read once
    sub = train_subset(len(train_x), train_size, streamed=streamed) if train_size > 0 else None
    return {"support": (train_x[sup].to(device), train_y[sup].to(device)),
            "test": (test_x.to(device), test_y.to(device)), "query": qry,
            "train": None if sub is None else (train_x[sub].to(device), train_y[sub].to(device)),
            "shots": tuple(k for k in (1, 5, 10, 25) if k <= fewest)}


def augment(x, gen, flip, rows=None):
    """Random crop with zero padding and an optional horizontal flip, on a uint8 batch [B, C, H, W].
    rows=(lo, total): x is rows lo..lo+B of a global batch of `total` (one data-parallel rank's shard); the
    draws are those of the whole global batch, so every example gets the same crop and flip on any world size."""
    b, _, h, w = x.shape
    lo, total = rows or (0, b)
    pad = 4 if h >= 32 else 2
    off = torch.randint(0, 2 * pad + 1, (2, total, 1), generator=gen)[:, lo:lo + b].to(x.device)
    rows, cols = off[0] + torch.arange(h, device=x.device), off[1] + torch.arange(w, device=x.device)
    x = F.pad(x, (pad,) * 4)[torch.arange(b, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    x = x.permute(0, 3, 1, 2)                                       # advanced indexing put channels last
    if flip:
        x = torch.where((torch.rand(total, generator=gen)[lo:lo + b] < 0.5).to(x.device)[:, None, None, None],
                        x.flip(3), x)
    return x


