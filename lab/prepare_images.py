"""Prepare an image folder once for training: fixed-resolution uint8 arrays, read memory-mapped (data.py).

The paper trained on ImageNet-21k resized to 120 x 120 and read through FFCV (Sec. 3), so that decoding
never held the GPU back. This script does that preparation for any folder in the usual layout:

    SRC/train/<class>/*.jpg|*.jpeg|*.png     one subfolder per class (ImageNet's layout)
    SRC/val/<class>/*.jpg|...                its classes must be among train's

    python prepare_images.py --src /data/imagenet --out /data/imagenet-120            # 120 px, every core
    python prepare_images.py --src /data/imagenet --out /data/imagenet-120 --workers 2 --resolution 64
    python train_vit.py --data-dir /data/imagenet-120 --model V256-6 --patch 12 ...

Each image: the shorter side resized to --resolution (JPEG decoded at reduced scale first when that is enough,
PIL's draft mode), then centre-cropped to a square; grayscale stays 1 channel, colour (RGB, CMYK, palette,
RGBA) becomes 3. Decoding runs in --workers processes (a multiprocessing Pool, in chunks of --chunk images),
with a progress bar.

Output in --out, per split: <split>.u8 (raw uint8 [N, H, W, C]), <split>.labels.npy (int32), <split>.json
(data.py documents the fields). Rows follow the sorted file list shuffled once (seed 0), so that the first N
rows, the trainers' test set, are a uniform sample; the rows of images that failed to decode are filled by the
last rows (then the file is cut short).

Resume and atomicity: rows go into <split>.u8.partial at their final offset; <split>.progress.json records the
chunks done (a prefix) and the files skipped. A killed run, started again with the same command, goes on
from the last chunk recorded. The partial file is renamed to <split>.u8 only when complete, the labels after
it, the JSON last: a half-written file never carries the final name, and a reader refuses a .u8 without its
JSON.

Bad input, each one line with exit code 2: a missing split or class folder, an empty class folder, mixed
channel counts under --channels auto, a --resolution that none of --patch-sizes divides, a val class the train
split lacks, a --splits entry that is a path (its files would land outside --out), more --workers than 8 a core,
more than --max-bad images that fail to decode (each one that fails is named in a warning, counted, and skipped).
"""
import hashlib
import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the core, at the repository root
import data as prepared                               # the prepared format's reader, in data.py
import runtime
from lab import write_json
from lab.presets import PRESETS
from runtime import UserError

EXTENSIONS = (".jpg", ".jpeg", ".png")
PAPER_PATCHES = PRESETS["patch"]["paper"]["patches"]


@dataclass
class Config:
    """Turn an image folder (SRC/train/<class>/*.jpg, SRC/val/<class>/*.jpg) into fixed-resolution uint8 files."""
    src: str
    """folder holding train/ (and val/), one subfolder per class of JPEG/PNG images"""
    out: str
    """output folder: <split>.u8, <split>.labels.npy, <split>.json per split"""
    resolution: int = 120
    """side of the square images (the paper: 120, which every patch size in {60, ..., 8} divides)"""
    splits: tuple[str, ...] = ("train", "val")
    """splits to prepare (subfolders of --src); the trainers need train and val"""
    channels: Literal["auto", "1", "3"] = "auto"
    """auto: the first train image's (1 grayscale, 3 colour), and an image with the other count is refused;
    1 or 3: convert every image"""
    workers: int = 0
    """decoding processes (0: every core)"""
    chunk: int = 256
    """images a worker decodes per task (and the resume granularity)"""
    max_bad: int = 100
    """images that may fail to decode (skipped, named in a warning) before the run stops"""
    patch_sizes: tuple[int, ...] = PAPER_PATCHES
    """patch sizes the data is meant for (default: the paper preset's); --resolution must be divisible by one"""
    progress: bool = True
    """tqdm progress bar on a terminal"""
    stop_after_chunks: int | None = None
    """(debug) quit as if killed (exit code 137) once this many chunks of a split are recorded"""


# ----------------------------------------------------------------------------- the file list

def list_split(src, split, classes=None):
    """(classes, [(relative path, label)]): the split's class folders sorted, their images sorted. With `classes`
    (the train split's), labels index into them and a class they lack is refused."""
    root = Path(src) / split
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; --src needs {split}/<class>/ subfolders of images")
    names = sorted(d.name for d in os.scandir(root) if d.is_dir())
    if not names:
        raise UserError(f"{root} has no class subfolders; --src needs {split}/<class>/*.jpg")
    if classes is not None and (extra := [c for c in names if c not in classes]):
        raise UserError(f"{root / extra[0]}: class {extra[0]!r} is not in the train split "
                        f"({len(extra)} such class folder(s)); the val split's classes must be among train's")
    index = {c: i for i, c in enumerate(classes or names)}
    files = []
    for name in names:
        images = sorted(e.name for e in os.scandir(root / name) if e.is_file() and e.name.lower().endswith(EXTENSIONS))
        if not images:
            raise UserError(f"{root / name} is an empty class folder (no {'/'.join(EXTENSIONS)} images); "
                            "remove it or add its images")
        files += [(f"{name}/{f}", index[name]) for f in images]
    order = np.random.default_rng(0).permutation(len(files))      # a fixed shuffle: any first N rows are a
    return classes or names, [files[i] for i in order]              # uniform sample (the trainers' test set)


def fingerprint(files, cfg, channels):
    """What a partial preparation must match to be resumed: the file list and the settings."""
    h = hashlib.sha256(json.dumps([cfg.resolution, channels, cfg.chunk, prepared.VERSION]).encode())
    for rel, label in files:
        h.update(f"{rel}\0{label}\n".encode())
    return h.hexdigest()[:20]


# ----------------------------------------------------------------------------- decoding (worker processes)

def channels_of(img):
    return 1 if img.mode in ("1", "L", "LA", "I", "I;16", "F") else 3


def decode(path, resolution, channels):
    """One image -> uint8 [R, R, C]: shorter side to R, centre crop. Raises on a corrupt file; returns the
    image's own channel count beside it (the caller refuses a mix)."""
    from PIL import Image, ImageOps
    with Image.open(path) as img:
        own = channels_of(img)
        img.draft("L" if channels == 1 else "RGB", (resolution, resolution))   # JPEG: decode at 1/2..1/8 scale
        img = img.convert("L" if channels == 1 else "RGB")
        img = ImageOps.fit(img, (resolution, resolution), Image.Resampling.BILINEAR)   # resize + centre crop
        arr = np.array(img, np.uint8)
    return arr.reshape(resolution, resolution, channels), own


def die_with_parent():
    """A worker's start (Linux): killed when the main process dies, so a killed run leaves no decoder behind."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, 9)                     # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass


def decode_chunk(task):
    """A worker's task: (chunk index, [absolute paths], R, C, strict) -> (index, rows [k, R, R, C], bad
    [(i, path, reason)], mixed [(i, path, channels)])."""
    k, files, resolution, channels, strict = task
    rows = np.zeros((len(files), resolution, resolution, channels), np.uint8)
    bad, mixed = [], []
    for i, path in enumerate(files):
        try:
            rows[i], own = decode(path, resolution, channels)
        except Exception as e:                       # corrupt, truncated or not an image: PIL raises many kinds
            bad.append((i, path, f"{type(e).__name__}: {str(e)[:120]}"))
            continue
        if strict and own != channels:
            mixed.append((i, path, own))
    return k, rows, bad, mixed


# ----------------------------------------------------------------------------- one split

class Progress:
    """<split>.progress.json: the chunks done (a prefix of them) and the images skipped, for a resume."""

    def __init__(self, path, fp, n, chunks):
        self.path, self.fp, self.done, self.bad, self.compacted = Path(path), fp, 0, [], False
        try:
            old = json.loads(self.path.read_text())
        except (OSError, ValueError, RecursionError):
            old = None if not self.path.exists() else {"fingerprint": fp}     # unreadable: damaged, as below
        old = old if old is None or isinstance(old, dict) else {"fingerprint": fp}   # not an object: damaged too
        if not isinstance(old, dict) or old.get("fingerprint") != fp:
            return                                        # none, or another preparation's: start afresh
        done, bad, compacted = old.get("done"), old.get("bad"), old.get("compacted")
        if (type(done) is int and 0 <= done <= chunks and type(compacted) is bool and isinstance(bad, list)
                and all(isinstance(b, list) and len(b) == 3 and type(b[0]) is int and 0 <= b[0] < n for b in bad)):
            self.done, self.bad, self.compacted = done, [list(b) for b in bad], compacted
        else:                                             # edited by hand: nothing in it can be trusted
            warn(f"{self.path} is damaged (done {done!r}); preparing the split afresh")

    def save(self):
        write_json(self.path, {"version": prepared.VERSION, "fingerprint": self.fp, "done": self.done,
                                       "bad": self.bad, "compacted": self.compacted})


def warn(text):
    tqdm.write(f"prepare_images.py: warning: {text}", file=sys.stderr)


def check_bad(bad, cfg, split):
    if len(bad) > cfg.max_bad:
        raise UserError(f"{len(bad)} images of the {split} split failed to decode (more than --max-bad "
                        f"{cfg.max_bad}), e.g. {bad[0][1]}; fix them or raise --max-bad (the run resumes)")


def decode_all(cfg, split, files, channels, strict, partial, prog, workers):
    """Decode every chunk not yet done into `partial` at its rows' offsets, recording progress."""
    src, R, C, n = Path(cfg.src) / split, cfg.resolution, channels, len(files)
    row_bytes, chunks = R * R * C, range(0, n, cfg.chunk)
    tasks = ((k, [str(src / rel) for rel, _ in files[k * cfg.chunk:(k + 1) * cfg.chunk]], R, C, strict)
             for k in range(prog.done, len(chunks)))
    bar = tqdm(total=n, initial=min(n, prog.done * cfg.chunk), unit="img", dynamic_ncols=True, desc=split,
               disable=None if cfg.progress else True)
    fd, saved = os.open(partial, os.O_RDWR), time.time()
    try:
        with multiprocessing.get_context("spawn" if sys.platform == "darwin" else "fork").Pool(workers, die_with_parent) as pool:
            for k, rows, bad, mixed in pool.imap(decode_chunk, tasks):
                if mixed:
                    i, path, own = mixed[0]
                    raise UserError(f"{path} has {own} channel(s), the split's first image {C}: mixed channel "
                                    f"counts ({len(mixed)} in this chunk); pass --channels 3 (or 1) to convert all")
                for i, path, reason in bad:
                    tqdm.write(f"prepare_images.py: warning: skipped {path}: {reason}", file=sys.stderr)
                    prog.bad.append([k * cfg.chunk + i, path, reason])
                os.pwrite(fd, rows.tobytes(), k * cfg.chunk * row_bytes)
                prog.done = k + 1
                check_bad(prog.bad, cfg, split)
                stop = cfg.stop_after_chunks is not None and prog.done >= cfg.stop_after_chunks
                if time.time() - saved > 1.0 or prog.done == len(chunks) or stop:
                    prog.save()                       # rows are in the file before the record says so
                    saved = time.time()
                if stop:
                    os._exit(137)                     # as a kill would: no clean-up, no rename
                bar.update(len(rows))
    finally:
        os.close(fd)
        bar.close()
        if prog.done:
            prog.save()


def plan_moves(n, bad_rows):
    """(rows kept, [(hole, source)]): the rows of skipped images below the new end are filled with the last good
    rows. Every move reads a row at or past the new end and writes one before it, so the moves can be repeated
    after a kill and give the same file."""
    bad = set(bad_rows)
    keep_n = n - len(bad)
    holes = sorted(r for r in bad if r < keep_n)
    return keep_n, list(zip(holes, (r for r in range(keep_n, n) if r not in bad)))


def compact(partial, labels, bad_rows, row_bytes, prog):
    """Skipped images' rows removed (plan_moves), in the file (once, recorded) and in the labels."""
    keep_n, moves = plan_moves(len(labels), bad_rows)
    if not prog.compacted:
        with open(partial, "r+b") as f:
            for hole, src in moves:
                f.seek(src * row_bytes)
                row = f.read(row_bytes)
                f.seek(hole * row_bytes)
                f.write(row)
        prog.compacted = True
        prog.save()                                       # recorded before the cut: a repeat only cuts again
    os.truncate(partial, keep_n * row_bytes)
    for hole, src in moves:
        labels[hole] = labels[src]
    return labels[:keep_n]


def prepare_split(cfg, split, classes, files, channels, workers):
    """One split (its classes and files from list_split), resumable; returns (its JSON description, the channel
    count)."""
    out = Path(cfg.out)
    data, labels_path, meta_path = prepared.paths(out, split)
    partial, R = Path(f"{data}.partial"), cfg.resolution
    strict = cfg.channels == "auto"                      # then every image must have the first one's count
    if channels is None:                                  # --channels auto: the first train image's count
        from PIL import Image
        try:
            with Image.open(Path(cfg.src) / split / files[0][0]) as img:
                channels = channels_of(img)
        except Exception:                                 # a corrupt first image: decode_all names it
            channels = 3
    fp = fingerprint(files, cfg, channels)
    done = finished(out, split, fp)
    if done:                                              # the same command again: nothing to do
        return done, channels
    prog = Progress(out / f"{split}.progress.json", fp, len(files), -(-len(files) // cfg.chunk))
    if prog.compacted and not partial.exists() and data.exists():
        os.replace(data, partial)                         # killed while finishing: finish again
    sizes = [n * R * R * channels for n in (len(files), len(files) - len(prog.bad))[:1 + prog.compacted]]
    if prog.done and partial.exists() and (size := partial.stat().st_size) not in sizes:
        warn(f"{partial} is {size} bytes, not {sizes[0]}: cut short, its rows lost; preparing the {split} split afresh")
        prog.done = 0                                     # the repair: decode every chunk again
    if prog.done == 0 or not partial.exists():            # a new preparation (or one whose file went missing)
        prog.done, prog.bad, prog.compacted = 0, [], False
        meta_path.unlink(missing_ok=True)
        with open(partial, "wb") as f:
            f.truncate(len(files) * R * R * channels)     # sparse: rows land at their offsets
    decode_all(cfg, split, files, channels, strict, partial, prog, workers)
    labels = compact(partial, np.array([label for _, label in files], np.int32), [b[0] for b in prog.bad],
                     R * R * channels, prog)
    if len(labels) == 0:
        raise UserError(f"{Path(cfg.src) / split}: no image decoded")
    # Finish: the data under its final name first, then the labels, the JSON last (it marks the split done).
    meta_path.unlink(missing_ok=True)
    os.replace(partial, data)
    runtime.atomic_write(labels_path, lambda tmp: save_npy(tmp, labels))
    n = len(labels)
    meta = {"version": prepared.VERSION, "kind": prepared.KIND, "split": split, "shape": [n, R, R, channels],
            "dtype": "uint8", "layout": "NHWC", "resolution": R, "channels": channels, "classes": classes,
            "counts": np.bincount(labels, minlength=len(classes)).tolist(), "bytes": n * R * R * channels,
            "data": data.name, "labels": labels_path.name, "source": str(Path(cfg.src).resolve() / split),
            "skipped": [b[1] for b in prog.bad], "fingerprint": fp}
    write_json(meta_path, meta)
    prog.path.unlink(missing_ok=True)
    return meta, channels


def save_npy(path, array):
    with open(path, "wb") as f:                           # a file object: np.save adds no ".npy" to the name
        np.save(f, array, allow_pickle=False)


def finished(out, split, fp):
    """The split's description if it was prepared already from the same files and settings, else None."""
    try:
        meta = prepared.read_meta(out, split)
    except UserError:
        return None
    return meta if meta.get("fingerprint") == fp else None


# ----------------------------------------------------------------------------- main

def check_flags(cfg):
    runtime.check_ranges(cfg, ("resolution", "chunk", "stop_after_chunks"), (
        ("resolution", cfg.resolution <= 4096), ("max_bad", cfg.max_bad >= 0),
        ("workers", 0 <= cfg.workers <= 8 * (os.cpu_count() or 1)),     # each one a process: never a fork storm
        ("patch_sizes", all(p >= 1 for p in cfg.patch_sizes))))
    if not cfg.splits or cfg.splits[0] != "train" or len(set(cfg.splits)) != len(cfg.splits):
        raise UserError(f"--splits {' '.join(cfg.splits)}: list train first (its classes label every split)")
    if bad := [s for s in cfg.splits if s in ("", ".", "..") or Path(s).name != s]:   # <split>.u8 lands in --out
        raise UserError(f"--splits {bad[0]!r}: a split is the name of a folder in --src (train, val), not a path")
    if cfg.patch_sizes and not any(cfg.resolution % p == 0 for p in cfg.patch_sizes):
        raise UserError(f"--resolution {cfg.resolution}: none of the patch sizes {' '.join(map(str, cfg.patch_sizes))} "
                        f"divides it; use a multiple of one (the paper: 120), or pass --patch-sizes")
    if not Path(cfg.src).is_dir():
        raise UserError(f"--src {cfg.src} is not a folder")
    runtime.check_out_dir(cfg.out, "--out")


def disk_bytes(path):
    """Bytes the file takes on disk (allocated blocks; a sparse file takes less than its length)."""
    return os.stat(path).st_blocks * 512


def main(cfg):
    check_flags(cfg)
    workers = cfg.workers or os.cpu_count() or 1
    classes, channels, listed = None, None if cfg.channels == "auto" else int(cfg.channels), {}
    for split in cfg.splits:                             # every folder checked before the first image is decoded
        classes, listed[split] = list_split(cfg.src, split, classes)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    for split in cfg.splits:
        t0 = time.time()
        meta, channels = prepare_split(cfg, split, classes, listed[split], channels, workers)
        data, labels, meta_path = prepared.paths(cfg.out, split)
        on_disk = sum(disk_bytes(p) for p in (data, labels, meta_path))
        print(f"{split}: {meta['shape'][0]} images {'x'.join(map(str, meta['shape'][1:]))}, "
              f"{len(meta['classes'])} classes, {len(meta['skipped'])} skipped, {on_disk / 1e6:,.1f} MB on disk "
              f"({data}), {time.time() - t0:.1f}s")
    if undivided := [p for p in cfg.patch_sizes if cfg.resolution % p]:    # said last: an error stays one line
        print(f"note: patch sizes {' '.join(map(str, undivided))} do not divide {cfg.resolution}; the others do",
              file=sys.stderr)
    return 0


def cli(args=None):
    """Parse the flags and prepare; bad input is one line on stderr and exit code 2."""
    return runtime.run_cli(main, Config, "prepare_images.py", args,
                           interrupted="the same command resumes from the last chunk written")


if __name__ == "__main__":
    sys.exit(cli())
