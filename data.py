"""The data, as train_vit.py and train_lm.py draw it (paper Sec. 3 and 5, App. B):

    train_x, train_y, test_x, test_y = load_dataset(cfg.data_dir)   # uint8 [N, C, H, W], int64 labels
    idx = batch_indices(len(train_x), samples, batch_size, seed)    # the data order: examples seen = position
    x = normalize(augment(train_x[idx], generator("augment", seed, step), flip))   # crop + flip, to [-1, 1]
    ev = eval_images(train_x, train_y, test_x, test_y, ...)         # fixed evaluation sets
    train, val, vocab, name = load_corpus(cfg.data)                 # the LM's tokens; get_batch, evaluate

Every random draw comes from a generator seeded by a key such as ("augment", seed, step): a resumed run, on
any number of torchrun processes, draws the same batches.
"""
import contextlib, functools, gzip, hashlib, json, math, mmap, os, pickle, struct, sysconfig, zipfile, zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from runtime import UserError

IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _read_idx(folder):
    """The four IDX files (gzipped or not) of Fashion-MNIST / MNIST, the images given a channel axis."""
    files = [next((f for f in (folder / stem, folder / f"{stem}.gz") if f.exists()), None) for stem in IDX]
    if None in files:
        raise UserError(f"{folder} has no {IDX[files.index(None)]}[.gz]: pass --data-dir with the four Fashion-MNIST "
                        "IDX files, CIFAR batches or an .npz (or `apt-get install dataset-fashion-mnist`)")
    x, y, tx, ty = (_read_idx_file(f) for f in files)
    return x[:, None], y, tx[:, None], ty


def _read_idx_file(path):
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
    ten, out = (d / "data_batch_1").exists(), []
    for names in ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]) if ten else (["train"], ["test"]):
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
            missing = [k for k in keys if k not in z.files]
            arrays = [] if missing else [z[k] for k in keys]
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
        raise UserError(f"cannot read {path}: truncated or not an .npz ({e})") from None
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)} (needs arrays {', '.join(keys)})")
    for i in (0, 2):                                # images: uint8, to [N, C, H, W]; labels stay numpy (check_labels)
        if (a := arrays[i]).dtype != np.uint8:
            raise UserError(f"{path}: {keys[i]} must be uint8 images, got {a.dtype}")
        channels_last = a.ndim == 4 and a.shape[-1] in (1, 3) and a.shape[1] not in (1, 3)
        a = a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2) if channels_last else a
        arrays[i] = torch.from_numpy(np.ascontiguousarray(a))
    return arrays


def load_dataset(data_dir, dataset="auto"):
    """(train_x, train_y, test_x, test_y): uint8 images [N, C, H, W] and int64 labels, every format checked alike."""
    p = Path(data_dir)
    if not p.exists():
        raise UserError(f"no data at {p}: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or pass "
                        "--data-dir with the four Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...), "
                        "CIFAR batches or an .npz")
    if dataset == "prepared" or (dataset == "auto" and is_prepared(p)):
        return load_prepared(p)
    if dataset == "auto":
        dataset = "npz" if p.is_file() else "cifar" if any(
            (p / n).exists() for n in ("data_batch_1", "train", "cifar-10-batches-py", "cifar-100-python")) else "idx"
    x, y, tx, ty = {"npz": _read_npz, "cifar": _read_cifar}.get(dataset, _read_idx)(p)
    if x.ndim != 4 or x.shape[2] != x.shape[3] or x.shape[1:] != tx.shape[1:] or len(x) != len(y) or len(tx) != len(ty):
        raise UserError(f"{p}: need square images [N, C, H, W] with one label each; "
                        f"got {tuple(x.shape)}, {tuple(tx.shape)}")
    if len(x) == 0 or len(tx) == 0:
        raise UserError(f"{p}: the training and the test split each need at least one image")
    y, ty = check_labels(y, ty, p)
    return x, y, tx, ty


def check_labels(y, ty, path, classes=65536):
    """Labels as read: 1-d integer class indices in [0, classes), 2 classes at least, every test class trained."""
    found = []
    for split, a in (("training", np.asarray(y)), ("test", np.asarray(ty))):
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise UserError(f"{path}: the {split} labels must be a 1-d integer array, got {a.dtype} {a.shape}")
        if len(a) and not (0 <= a.min() and a.max() < classes):
            raise UserError(f"{path}: the {split} class labels must lie in [0, {classes}), got {a.min()}..{a.max()}")
        found.append(np.unique(a))
    if len(found[0]) < 2:
        raise UserError(f"{path}: every training label is {found[0].tolist()}; a classifier needs two classes at least")
    if len(missing := np.setdiff1d(found[1], found[0])):
        raise UserError(f"{path}: test class(es) {missing[:10].tolist()} have no training image")
    return tuple(torch.from_numpy(np.asarray(v).astype(np.int64)) for v in (y, ty))


def resize_images(x, size, chunk=4096):
    """uint8 images [N, C, H, W] -> [N, C, size, size]: bilinear, antialiased, in chunks; `x` if the same size."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = torch.empty((len(x), x.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, len(x), chunk):
        out[i:i + chunk] = F.interpolate(x[i:i + chunk].float(), size=(size, size), mode="bilinear",
                                         align_corners=False, antialias=True).round_().clamp_(0, 255).to(torch.uint8)
    return out


def load_images(data_dir, dataset="auto", image_size=0, fewshot_data=None):
    """A ViT run's images, uint8 [N, C, H, W]: (train_x, train_y, test_x, test_y, the --fewshot-data sets or None),
    resized once to `image_size` (0: as they are); a prepared folder stays memory-mapped."""
    train_x, train_y, test_x, test_y = load_dataset(data_dir, dataset)
    if image_size and not torch.is_tensor(train_x):
        raise UserError(f"--image-size {image_size}: {data_dir} is prepared at a fixed resolution; "
                        f"prepare it at the side you want (lab/prepare_images.py --resolution {image_size})")
    if image_size:
        train_x, test_x = resize_images(train_x, image_size), resize_images(test_x, image_size)
    if fewshot_data is None:
        return train_x, train_y, test_x, test_y, None
    if not is_prepared(fewshot_data):
        raise UserError(f"--fewshot-data {fewshot_data}: not a folder prepared by prepare_images.py (no train.json)")
    sets = load_prepared(fewshot_data)
    if sets[0].shape[1:] != train_x.shape[1:]:
        raise UserError(f"--fewshot-data {fewshot_data}: images {tuple(sets[0].shape[1:])} (C, H, W), the training "
                        f"images {tuple(train_x.shape[1:])}; prepare both at the same --resolution")
    return train_x, train_y, test_x, test_y, sets


def normalize(x):
    return x.float().div_(127.5).sub_(1.0)                          # uint8 images -> float in [-1, 1]

def key_seed(*key):
    return int(hashlib.sha256(repr(key).encode()).hexdigest()[:15], 16)


def generator(*key):                                                # a CPU generator: see the module docstring
    return torch.Generator().manual_seed(key_seed(*key))


@functools.lru_cache(maxsize=2)
def permutation(n, seed, epoch):
    return torch.randperm(n, generator=generator("perm", seed, epoch))


def batch_indices(n, samples, batch_size, seed, streamed=False):
    """The next batch of an endless stream of per-epoch permutations; `samples` (examples seen) is the position.
    streamed (for a prepared file of any size): each permutation is computed row by row, never held."""
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
    """Rows start..start+count of a permutation of range(n) seeded by (seed, epoch), without holding it: a
    balanced Feistel network on the fewest even bits covering n is a bijection of [0, 2^bits); cycle-walking
    (apply it again while the value is >= n) restricts it to one of [0, n)."""
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


def draw(n, size, streamed, *key):
    """The first `size` of a permutation of range(n) seeded by `key` (streamed: memory O(size), not O(n))."""
    return (feistel_permutation(n, key_seed(*key), 0, 0, min(size, n)) if streamed
            else torch.randperm(n, generator=generator(*key))[:size])


def augment(x, gen, flip, rows=None):
    """The paper's augmentation on a uint8 batch [B, C, H, W]: a random crop with zero padding (2 px below 32 px,
    4 px from 32 px) and a horizontal flip. rows=(lo, total): x is rows lo..lo+B of a global batch of `total`
    (one torchrun rank's shard), drawn as for the whole batch, so any world size crops and flips alike."""
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

def _support(train_x, train_y, support, streamed):
    """The k-shot pool, `support` training images fixed for every run and seed, and the k it allows."""
    sup = draw(len(train_x), support, streamed, "support")
    fewest = int(torch.bincount(train_y[sup], minlength=int(train_y.max()) + 1).min())
    if fewest < 10:
        raise UserError(f"--fewshot-support {support} holds only {fewest} images of some class; "
                        "10-shot needs 10 per class: raise --fewshot-support")
    return sup, tuple(k for k in (1, 5, 10, 25) if k <= fewest)


def eval_images(train_x, train_y, test_x, test_y, support, query, test_size, train_size, device, fewshot=None):
    """Fixed uint8 sets for eval_fewshot.evaluate_all: "support" the k-shot pool, "test" the first `test_size` test
    images, "query" indices into "test" of `query` k-shot queries (None: all), "train" `train_size` training images
    (None if 0), "shots" the k the pool allows; fewshot=(pool x, y, query x, y): pool and "query_set" from these."""
    streamed, n_test = not torch.is_tensor(train_x), min(test_size, len(test_x))   # streamed: a prepared file
    if fewshot is not None:
        ev = eval_images(*fewshot, support, query, query, 0, device)
        ev["query_set"] = ev["test"] if ev["query"] is None else tuple(t[ev["query"]] for t in ev["test"])
        ev["query"] = None
    else:
        sup, shots = _support(train_x, train_y, support, streamed)
        qry = None if query >= n_test else torch.randperm(n_test, generator=generator("query"))[:query].to(device)
        ev = {"support": (train_x[sup].to(device), train_y[sup].to(device)), "query": qry, "shots": shots}
    ev["test"] = (test_x[:n_test].to(device), test_y[:n_test].to(device))    # a prepared file: read once
    sub = draw(len(train_x), train_size, streamed, "train_subset", 0)    # fixed for every run: train_error's set
    ev["train"] = (train_x[sub].to(device), train_y[sub].to(device)) if train_size > 0 else None
    return ev


# ------------------------------------------- prepared image folders (lab/prepare_images.py; the paper's FFCV idea)
# Per split: <split>.u8 (uint8 rows [N, H, W, C]), <split>.labels.npy (int32), <split>.json (written last).

VERSION = 1
KIND = "prepared_images"


def is_prepared(path):
    return Path(path).is_dir() and (Path(path) / "train.json").is_file()


def paths(folder, split):                           # (data, labels, meta): the layout above
    return tuple(Path(folder) / f"{split}{ext}" for ext in (".u8", ".labels.npy", ".json"))


def read_meta(folder, split):
    """The split's JSON, checked: version, kind, shape; the data file present at its size."""
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


class _Mapped:
    """A memory-mapped file's rows; .to(device) is itself (batches move, not the file). Memory stays flat: no
    read-ahead (MADV_RANDOM), and this process's pages dropped after every `release_bytes` read (MADV_DONTNEED)."""

    def __init__(self, map_, shape, release_bytes):
        self.map, self.shape, self.release_bytes, self.read = map_, torch.Size(shape), release_bytes, 0
        if map_ is not None:
            map_.madvise(mmap.MADV_RANDOM)

    def __len__(self):
        return self.shape[0]

    def to(self, device):
        return self

    def _index(self, idx):
        if isinstance(idx, slice):
            return np.arange(*idx.indices(len(self)))
        return idx.detach().cpu().numpy() if torch.is_tensor(idx) else np.asarray(idx)

    def _account(self, nbytes):
        self.read += nbytes
        if self.map is not None and self.read >= self.release_bytes:
            self.map.madvise(mmap.MADV_DONTNEED)
            self.read = 0


class Images(_Mapped):
    """A prepared split's images: .shape [N, C, H, W]; [idx] -> uint8 tensor [B, C, H, W], read in file order."""

    def __init__(self, path, shape, release_bytes=32 << 20):
        n, h, w, c = shape
        with open(path, "rb") as f:
            super().__init__(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), (n, c, h, w), release_bytes)
        self.path, self.rows = Path(path), np.frombuffer(self.map, np.uint8).reshape(n, h, w, c)
        self.page_bytes = (h * w * c // mmap.PAGESIZE + 2) * mmap.PAGESIZE     # the most a random row maps

    def __getitem__(self, idx):
        idx = self._index(idx).astype(np.int64).reshape(-1)
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), *self.rows.shape[1:]), np.uint8)
        out[order] = self.rows[idx[order]]
        self._account(len(idx) * self.page_bytes)
        return torch.from_numpy(out).permute(0, 3, 1, 2)  # NHWC on disk -> NCHW, a view (no copy)


class Labels(_Mapped):
    """A prepared split's labels (int32 on disk): [idx] -> int64 tensor; .max() from the JSON's class list."""

    def __init__(self, path, n, num_classes):
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise UserError(f"{path} is unreadable ({type(e).__name__}); prepare it again") from None
        if arr.shape != (n,) or arr.dtype != np.int32:
            raise UserError(f"{path} holds {arr.dtype} {arr.shape}, expected int32 ({n},): prepare it again")
        super().__init__(getattr(arr, "_mmap", None), (n,), 4 << 20)
        self.arr, self.num_classes = arr, num_classes

    def max(self):
        return torch.tensor(self.num_classes - 1)

    def __getitem__(self, idx):
        out = torch.from_numpy(np.asarray(self.arr[self._index(idx)], np.int64))
        self._account(4096 * out.numel())                 # a random label touches a page
        return out


def open_split(folder, split):
    """(Images, Labels, meta) of one split of a prepared folder; bad files are one line naming the file."""
    meta, (data, labels, _) = read_meta(folder, split), paths(folder, split)
    return Images(data, meta["shape"]), Labels(labels, meta["shape"][0], len(meta["classes"])), meta


def load_prepared(folder):
    """(train_x, train_y, test_x, test_y) of a prepared folder, memory-mapped: val is the test set."""
    train_x, train_y, tm = open_split(folder, "train")
    test_x, test_y, vm = open_split(folder, "val")
    if tm["shape"][1:] != vm["shape"][1:] or tm["classes"] != vm["classes"]:
        raise UserError(f"{paths(folder, 'val')[2]}: resolution, channels or classes differ from the train "
                        "split's; prepare both splits in one prepare_images.py run")
    check_labels(train_y.arr, test_y.arr, folder, len(tm["classes"]))
    return train_x, train_y, test_x, test_y


# ----------------------------------------------------------------------------- text for the LM (Sec. 5)
# By default the standard library's .py files as bytes (vocabulary 256): real code on every machine, no download.

def load_corpus(data="", glob="", vocab_size=0, val_fraction=0.05, cache_dir="runs/.cache"):
    """-> (train tokens, validation tokens, vocabulary size, a name), numpy arrays. `data`: a text file or folder
    (bytes), or a uint16 token file *.bin with `vocab_size`; a file's tail is its validation split."""
    path = Path(data or sysconfig.get_paths()["stdlib"])
    if path.is_dir():
        return load_folder(path, glob or ("*" if data else "*.py"), val_fraction, cache_dir)
    if not path.is_file():
        raise UserError(f"--data {data}: no such file or folder")
    vocab, dtype = (vocab_size, np.uint16) if path.suffix == ".bin" else (256, np.uint8)
    if path.suffix == ".bin" and (vocab <= 0 or path.stat().st_size % 2):
        raise UserError(f"--data {data}: a uint16 token file needs --vocab-size (and an even byte count)")
    tokens = _memmap(path, dtype)
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
                out.writelines(f.read_bytes() for f, v in zip(files, in_val) if v == want)
            os.replace(f"{path}.{os.getpid()}.tmp", path)
    train, val = (_memmap(p, np.uint8) for p in paths)
    return train, val, 256, f"{root.resolve()}:{pattern}"


def _memmap(path, dtype):
    return np.memmap(path, dtype=dtype, mode="c") if path.stat().st_size else np.zeros(0, dtype)


def get_batch(tokens, step, batch, context, seed, rows=None):
    """Random windows of context+1 tokens -> (inputs, targets) [batch, context], a function of (seed, step) only."""
    lo, hi = rows or (0, batch)                     # rows (lo, hi): one process's shard of the global batch
    starts = np.random.default_rng([seed, step]).integers(0, len(tokens) - context, size=batch)[lo:hi]
    xy = torch.from_numpy(tokens[starts[:, None] + np.arange(context + 1)].astype(np.int64))
    return xy[:, :-1], xy[:, 1:]


@torch.no_grad()
def evaluate(model, val, context, val_tokens, batch_tokens, device, autocast=contextlib.nullcontext()):
    """Mean next-token loss over the first val_tokens tokens of val, in windows of `context` tokens: the same tokens
    at every context (the paper truncates the same samples)."""
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
