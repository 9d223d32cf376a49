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
import json
import math
import mmap
import os
import pickle
import struct
import sysconfig
import zipfile
import zlib
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

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
    if dataset == "prepared" or (dataset == "auto" and is_prepared(p)):
        return load_prepared(p)               # memory-mapped, never loaded (prepare_images.py)
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
    streamed = not torch.is_tensor(train_x)                       # a prepared file (Images)
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


# ----------------------------------------------------------------------------- prepared image folders
# The format lab/prepare_images.py writes (any image folder, e.g. ImageNet at 120 px), read memory-mapped.
# Prepared image files: the format prepare_images.py writes and the memory-mapped reader the trainers use.
#
# The paper read ImageNet-21k at 120 px through FFCV: fixed-resolution images prepared once, read fast. This is
# the same idea without a framework. A prepared folder holds, per split (`train`, `val`):
#
#     <split>.u8          raw uint8 array [N, H, W, C] (np.memmap-able, no header), rows in a fixed shuffled order
#     <split>.labels.npy  int32 class index per row (into the train split's class list)
#     <split>.json        {"version", "kind": "prepared_images", "split", "shape": [N, H, W, C], "dtype": "uint8",
#                          "layout": "NHWC", "resolution", "channels", "classes": [names], "counts": [per class],
#                          "bytes", "data", "labels", "skipped": [files that failed to decode], "source"}
#
# The JSON is renamed into place last, so it marks a finished split: a `.u8` without it is refused.
#
# Reading (`open_split`): the file is memory-mapped, never loaded. `Images[idx]` gathers the rows of a batch (a
# LongTensor, a slice or an array of indices) into a uint8 tensor [B, C, H, W]; each torchrun rank asks only for
# its own rows. Memory does not grow with the file: the mapping is advised MADV_RANDOM (no read-ahead), and the
# pages a process has touched are dropped from it (MADV_DONTNEED; they stay in the page cache) once it has read
# `release_bytes` since the last drop, so the resident set stays within a few tens of MB of mapped file pages.

VERSION = 1
KIND = "prepared_images"
SPLITS = ("train", "val")


def is_prepared(path):
    """A folder prepare_images.py wrote (its train.json is there)."""
    return Path(path).is_dir() and (Path(path) / "train.json").is_file()


def paths(folder, split):
    folder = Path(folder)
    return folder / f"{split}.u8", folder / f"{split}.labels.npy", folder / f"{split}.json"


def read_meta(folder, split):
    """The split's JSON, checked: version, kind, shape; the data and labels files present at their sizes."""
    data, labels, meta_path = paths(folder, split)
    if not meta_path.is_file():
        hint = " (prepare_images.py did not finish it: run it again)" if data.exists() or Path(
            f"{data}.partial").exists() else ""
        raise UserError(f"{meta_path} is missing{hint}; prepare the {split} split with prepare_images.py")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{meta_path} is unreadable ({type(e).__name__}); prepare it again") from None
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise UserError(f"{meta_path} is not a prepare_images.py description; prepare it again")
    if meta.get("version") != VERSION:
        raise UserError(f"{meta_path} has version {meta.get('version')!r}, this code reads version {VERSION}; "
                        "prepare it again with this prepare_images.py")
    shape = meta.get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(type(s) is int and s > 0 for s in shape)
            and shape[1] == shape[2] and shape[3] in (1, 3) and isinstance(meta.get("classes"), list)):
        raise UserError(f"{meta_path}: field 'shape' must be [N, H, H, 1|3] with a 'classes' list; prepare it again")
    size = os.path.getsize(data) if data.is_file() else None
    if size != int(np.prod(shape)):
        raise UserError(f"{data} is {'missing' if size is None else f'{size} bytes'}, {meta_path} says "
                        f"{int(np.prod(shape))}: truncated or from another preparation; prepare it again")
    return meta


class Images:
    """A prepared split's images, memory-mapped: len(), .shape ([N, C, H, W] as torch would give it), and
    [idx] -> uint8 tensor [B, C, H, W] on the CPU. .to(device) returns itself (the batches move, not the file)."""

    def __init__(self, path, shape, release_bytes=32 << 20):
        self.path, self.release_bytes, self.read = Path(path), release_bytes, 0
        n, h, w, c = shape
        self.shape = torch.Size((n, c, h, w))
        with open(path, "rb") as f:
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.map.madvise(mmap.MADV_RANDOM)           # rows are read in random order: no read-ahead
        self.rows = np.frombuffer(self.map, np.uint8).reshape(n, h, w, c)
        self.row_bytes = h * w * c
        self.page_bytes = (self.row_bytes // mmap.PAGESIZE + 2) * mmap.PAGESIZE   # the most a random row maps

    def __len__(self):
        return self.shape[0]

    def to(self, device):
        return self

    def _index(self, idx):
        if isinstance(idx, slice):
            return np.arange(*idx.indices(len(self)))
        return idx.detach().cpu().numpy() if torch.is_tensor(idx) else np.asarray(idx)

    def __getitem__(self, idx):
        idx = self._index(idx).astype(np.int64).reshape(-1)
        order = np.argsort(idx, kind="stable")          # read in file order, hand back in batch order
        out = np.empty((len(idx), *self.rows.shape[1:]), np.uint8)
        out[order] = self.rows[idx[order]]
        self._account(len(idx) * self.page_bytes)
        return torch.from_numpy(out).permute(0, 3, 1, 2)  # NHWC on disk -> NCHW, a view (no copy)

    def _account(self, nbytes):
        """Drop this process's mapped pages after every `release_bytes` read: RSS stays flat, the cache stays warm."""
        self.read += nbytes
        if self.read >= self.release_bytes:
            self.map.madvise(mmap.MADV_DONTNEED)
            self.read = 0


class Labels:
    """A prepared split's labels, memory-mapped int32: len(), [idx] -> int64 tensor, .max() (from the JSON's
    class list), .to(device) returns itself."""

    def __init__(self, path, n, num_classes):
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise UserError(f"{path} is unreadable ({type(e).__name__}); prepare it again") from None
        if arr.shape != (n,) or arr.dtype != np.int32:
            raise UserError(f"{path} holds {arr.dtype} {arr.shape}, expected int32 ({n},): prepare it again")
        self.arr, self.num_classes, self.shape = arr, num_classes, torch.Size((n,))
        self.map, self.read, self.release_bytes = getattr(arr, "_mmap", None), 0, 4 << 20
        if self.map is not None:
            self.map.madvise(mmap.MADV_RANDOM)

    def __len__(self):
        return self.shape[0]

    def to(self, device):
        return self

    def max(self):
        return torch.tensor(self.num_classes - 1)

    def __getitem__(self, idx):
        idx = idx.detach().cpu().numpy() if torch.is_tensor(idx) else idx
        out = torch.from_numpy(np.asarray(self.arr[idx], np.int64))
        self.read += 4096 * out.numel()                 # a random label touches a page
        if self.map is not None and self.read >= self.release_bytes:
            self.map.madvise(mmap.MADV_DONTNEED)         # as Images: resident memory stays flat
            self.read = 0
        return out


def open_split(folder, split):
    """(Images, Labels, meta) of one split of a prepared folder; bad files are one line naming the file."""
    meta = read_meta(folder, split)
    data, labels, _ = paths(folder, split)
    n = meta["shape"][0]
    return Images(data, meta["shape"]), Labels(labels, n, len(meta["classes"])), meta


def load_prepared(folder):
    """(train_x, train_y, test_x, test_y) of a prepared folder, as data.load_dataset returns them, memory-mapped;
    the val split is the test set. The two splits must agree on resolution, channels and classes."""
    train_x, train_y, tm = open_split(folder, "train")
    test_x, test_y, vm = open_split(folder, "val")
    if tm["shape"][1:] != vm["shape"][1:] or tm["classes"] != vm["classes"]:
        raise UserError(f"{paths(folder, 'val')[2]}: resolution, channels or classes differ from the train "
                        "split's; prepare both splits in one prepare_images.py run")
    return train_x, train_y, test_x, test_y


# ----------------------------------------------------------------------------- text for the LM (Sec. 5)
# Text data for train_lm.py (paper Sec. 5): a token corpus split into train / validation, random training
# batches, and the validation loss.
#
#     train, val, vocab, name = load_corpus()                      # the Python standard library, as bytes
#     x, y = get_batch(train, step, batch=64, context=64, seed=0)   # [64, 64] inputs, targets shifted by one
#     x, y = get_batch(train, step, 64, 64, 0, rows=(0, 32))        # rank 0's half of that same global batch
#     loss = evaluate(model, val, context=64, val_tokens=32768, batch_tokens=4096, device="cpu")
#
# By default the corpus is the Python standard library's .py files as bytes (vocabulary 256): real code on every
# machine with Python, no download. `data` also takes a text file or folder (bytes), or a uint16 token file
# *.bin with `vocab_size`. A folder is split into train and validation by a hash of each file's relative path
# and cached under `cache_dir` as two uint8 files (memory-mapped); a single file is split by position (its tail
# is the validation split).
#
# A step's windows start at random positions drawn from a generator seeded by (seed, step) only: a resumed run
# sees the same batches, and under data parallelism (dist.py) each process takes its rows of the same global
# batch, so the data order does not depend on the number of processes.
#
# Validation: the first val_tokens tokens of the validation split in windows of the context, so every context
# predicts the same tokens (the paper truncates the same samples to each model's context).

def load_corpus(data="", glob="", vocab_size=0, val_fraction=0.05, cache_dir="runs/.cache"):
    """-> (train tokens, validation tokens, vocabulary size, a name for the data) as numpy arrays."""
    path = Path(data or sysconfig.get_paths()["stdlib"])
    if path.is_dir():
        return load_folder(path, glob or ("*" if data else "*.py"), val_fraction, cache_dir)
    if not path.is_file():
        raise UserError(f"--data {data}: no such file or folder")
    vocab, dtype = (vocab_size, np.uint16) if path.suffix == ".bin" else (256, np.uint8)
    if path.suffix == ".bin" and (vocab <= 0 or path.stat().st_size % 2):
        raise UserError(f"--data {data}: a uint16 token file needs --vocab-size (and an even byte count)")
    tokens = np.memmap(path, dtype=dtype, mode="c") if path.stat().st_size else np.zeros(0, dtype)
    if len(tokens) == 0:
        raise UserError(f"--data {data}: the corpus is empty")
    if path.suffix == ".bin" and int(tokens.max()) >= vocab:
        raise UserError(f"--data {data}: token id {int(tokens.max())} >= --vocab-size {vocab}")
    cut = len(tokens) - int(len(tokens) * val_fraction)
    return tokens[:cut], tokens[cut:], vocab, str(path.resolve())


def load_folder(root, pattern, val_fraction, cache_dir):
    """A folder's files as bytes, split by a hash of the relative path, cached as two uint8 files."""
    skip = {"site-packages", "dist-packages", "__pycache__"}
    files = sorted(f for f in root.rglob(pattern) if f.is_file() and not skip & set(f.relative_to(root).parts))
    names = [f.relative_to(root).as_posix() for f in files]
    stats = [(n, f.stat().st_size, f.stat().st_mtime_ns) for n, f in zip(names, files)]
    if sum(size for _, size, _ in stats) == 0:
        raise UserError(f"--data {root}: the corpus is empty (no non-empty files matching {pattern!r})")
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
