"""Prepared image files: the format prepare_images.py writes and the memory-mapped reader the trainers use.

The paper read ImageNet-21k at 120 px through FFCV: fixed-resolution images prepared once, read fast. This is
the same idea without a framework. A prepared folder holds, per split (`train`, `val`):

    <split>.u8          raw uint8 array [N, H, W, C] (np.memmap-able, no header), rows in a fixed shuffled order
    <split>.labels.npy  int32 class index per row (into the train split's class list)
    <split>.json        {"version", "kind": "prepared_images", "split", "shape": [N, H, W, C], "dtype": "uint8",
                         "layout": "NHWC", "resolution", "channels", "classes": [names], "counts": [per class],
                         "bytes", "data", "labels", "skipped": [files that failed to decode], "source"}

The JSON is renamed into place last, so it marks a finished split: a `.u8` without it is refused.

Reading (`open_split`): the file is memory-mapped, never loaded. `Images[idx]` gathers the rows of a batch (a
LongTensor, a slice or an array of indices) into a uint8 tensor [B, C, H, W]; each torchrun rank asks only for
its own rows. Memory does not grow with the file: the mapping is advised MADV_RANDOM (no read-ahead), and the
pages a process has touched are dropped from it (MADV_DONTNEED; they stay in the page cache) once it has read
`release_bytes` since the last drop, so the resident set stays within a few tens of MB of mapped file pages.
"""
import json
import mmap
import os
from pathlib import Path

import numpy as np
import torch

from runtime import UserError

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
