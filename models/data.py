"""Data sets, all offline: scikit-learn's bundled digits, MNIST IDX files the user already has,
and the FFN's synthetic regression data.

Images come out as float32 arrays (N, 1, H, W) in [0, 1], like torchvision's ToTensor, so the
same inputs feed the float model, the int8 torch model and the compiled C model.

Data specs (the `--data` option of the CLIs):
  digits            sklearn's 8x8 digits resized to 28x28 (default for the digit models)
  mnist:DIR         MNIST IDX files in DIR (train-images-idx3-ubyte[.gz] etc.)
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass

import numpy as np

from nnc.errors import NncError

HELDOUT_FRACTION = 0.2
SPLIT_SEED = 0


class DataError(NncError):
    """A data problem the user can fix (missing files, bad spec). `nnc` prints it and exits 2."""


@dataclass
class Split:
    x: np.ndarray   # float32, (N, ...) model input domain
    y: np.ndarray   # int64 labels (N,) or float32 targets (N, 1)

    def __len__(self):
        return len(self.x)


# ---------------------------------------------------------------------------------------------
# sklearn digits, resized
# ---------------------------------------------------------------------------------------------
_DIGITS_CACHE: dict = {}


def _resize_digits(images: np.ndarray, size: int) -> np.ndarray:
    """(N, 8, 8) in 0..16 -> (N, 1, size, size) float32 in [0, 1] via PIL bilinear, 8-bit like
    a real image (so ToTensor-style normalisation k/255 holds exactly)."""
    from PIL import Image
    out = np.empty((len(images), 1, size, size), dtype=np.float32)
    for i, img in enumerate(images):
        u8 = np.clip(np.rint(img * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        big = Image.fromarray(u8, mode="L").resize((size, size), Image.BILINEAR)
        out[i, 0] = np.asarray(big, dtype=np.float32) / 255.0
    return out


def digits(size: int = 28) -> tuple[Split, Split]:
    """Deterministic (train, held-out) split of sklearn's digits at size x size."""
    if size in _DIGITS_CACHE:
        return _DIGITS_CACHE[size]
    from sklearn.datasets import load_digits
    d = load_digits()
    x = _resize_digits(d.images, size)
    y = d.target.astype(np.int64)
    rng = np.random.RandomState(SPLIT_SEED)
    perm = rng.permutation(len(x))
    n_held = int(round(len(x) * HELDOUT_FRACTION))
    held, train = perm[:n_held], perm[n_held:]
    res = (Split(x[train], y[train]), Split(x[held], y[held]))
    _DIGITS_CACHE[size] = res
    return res


# ---------------------------------------------------------------------------------------------
# MNIST IDX
# ---------------------------------------------------------------------------------------------
_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx(directory: str, base: str) -> str:
    candidates = [base, base + ".gz", base.replace("-idx", ".idx"), base.replace("-idx", ".idx") + ".gz"]
    for c in candidates:
        p = os.path.join(directory, c)
        if os.path.isfile(p):
            return p
    raise DataError(f"MNIST file {base}[.gz] not found in {directory!r}: expected the four IDX files "
                    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                    "t10k-labels-idx1-ubyte (optionally .gz). Nothing is downloaded; copy them there, "
                    "or use --data digits")


def read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise DataError(f"{path}: not an IDX file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {data.size} bytes (truncated?)")
    return data.reshape(dims)


def mnist(directory: str, size: int = 28) -> tuple[Split, Split]:
    if not os.path.isdir(directory):
        raise DataError(f"MNIST directory {directory!r} does not exist")
    splits = []
    for part in ("train", "test"):
        img_name, lbl_name = _IDX_NAMES[part]
        imgs = read_idx(_find_idx(directory, img_name))
        lbls = read_idx(_find_idx(directory, lbl_name))
        if len(imgs) != len(lbls):
            raise DataError(f"MNIST {part}: {len(imgs)} images but {len(lbls)} labels")
        x = imgs.astype(np.float32)[:, None] / 255.0
        if size != x.shape[-1]:
            x = _resize_u8(imgs, size)
        splits.append(Split(x, lbls.astype(np.int64)))
    return splits[0], splits[1]


def _resize_u8(imgs: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image
    out = np.empty((len(imgs), 1, size, size), dtype=np.float32)
    for i, img in enumerate(imgs):
        out[i, 0] = np.asarray(Image.fromarray(img, mode="L").resize((size, size), Image.BILINEAR),
                               dtype=np.float32) / 255.0
    return out


def image_data(spec: str, size: int = 28) -> tuple[Split, Split]:
    """Parse a `--data` spec for a digit model: 'digits' or 'mnist:DIR'."""
    spec = (spec or "digits").strip()
    if spec == "digits":
        return digits(size)
    if spec.startswith("mnist:"):
        return mnist(os.path.expanduser(spec[len("mnist:"):]), size)
    raise DataError(f"unknown data spec {spec!r}: use 'digits' (sklearn's bundled digits, offline) "
                    "or 'mnist:DIR' (a directory with the MNIST IDX files)")


def shifted_variants(x: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """n real images: x itself, then deterministic copies shifted by up to 2 pixels (zero fill)."""
    if n <= len(x):
        return x[:n].copy()
    rng = np.random.RandomState(seed)
    out = [x]
    total = len(x)
    while total < n:
        dy, dx = rng.randint(-2, 3, size=2)
        if dy == 0 and dx == 0:
            continue
        s = np.roll(x, (int(dy), int(dx)), axis=(-2, -1))
        if dy > 0:
            s[..., :dy, :] = 0
        elif dy < 0:
            s[..., dy:, :] = 0
        if dx > 0:
            s[..., :dx] = 0
        elif dx < 0:
            s[..., dx:] = 0
        out.append(s)
        total += len(s)
    return np.concatenate(out)[:n]


# ---------------------------------------------------------------------------------------------
# FFN synthetic regression data
# ---------------------------------------------------------------------------------------------
FFN_NOISE = 0.1


def ffn_target(x: np.ndarray) -> np.ndarray:
    """The noiseless function the FFN learns: a smooth bump-and-ridge surface on [-1, 1]^2."""
    x1, x2 = x[:, 0], x[:, 1]
    return (np.abs(x1) + 0.5 * x2 * x2 + 0.5 * np.maximum(x1 + x2, 0.0)).astype(np.float32)


def ffn_synthetic(n_samples: int = 10000, seed: int = 42, noise: float = FFN_NOISE) -> tuple[Split, Split]:
    """(train, test) for the FFN: x ~ U(-1, 1)^2, y = ffn_target(x) + N(0, noise^2); 80/20 split."""
    if n_samples < 10:
        raise DataError(f"--n_samples must be at least 10 (got {n_samples})")
    rng = np.random.RandomState(seed)
    x = rng.uniform(-1.0, 1.0, size=(n_samples, 2)).astype(np.float32)
    y = ffn_target(x) + rng.normal(0.0, noise, size=n_samples).astype(np.float32)
    y = y.astype(np.float32)[:, None]
    n_test = max(1, int(round(n_samples * 0.2)))
    return Split(x[n_test:], y[n_test:]), Split(x[:n_test], y[:n_test])


def save_ffn_npy(n_samples: int, seed: int, out_dir: str) -> list[str]:
    """Write train.npy / test.npy like the seed's generate_data.py: arrays (N, 3) = x1, x2, y."""
    train, test = ffn_synthetic(n_samples, seed)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, s in (("train.npy", train), ("test.npy", test)):
        p = os.path.join(out_dir, name)
        np.save(p, np.concatenate([s.x, s.y], axis=1))
        paths.append(p)
    return paths


# ---------------------------------------------------------------------------------------------
# Synthetic inputs for the benchmark-only networks (MLPerf Tiny shapes; their data sets are not
# available offline)
# ---------------------------------------------------------------------------------------------
SYNTHETIC_SEED = 2024


def synthetic(shape: tuple, n_train: int = 512, n_heldout: int = 128, seed: int = SYNTHETIC_SEED
              ) -> tuple[Split, Split]:
    """(train, held-out) of smooth random inputs in [0, 1) with `shape` per sample (no labels:
    y is 0): a coarse random field upsampled to the input's height and width plus fine noise, so
    convolutions see spatial structure as in real images or spectrograms. 1-D inputs (the
    autoencoder's 640 values) are treated as 5 x 128 frames."""
    rng = np.random.RandomState(seed)
    n = n_train + n_heldout
    grid = tuple(shape[-2:]) if len(shape) >= 3 else (5, 128)
    coarse = rng.uniform(0.0, 1.0, size=(n, int(np.prod(shape)) // int(np.prod(grid)))
                         + tuple(max(1, g // 4) for g in grid))
    reps = [g // c + 1 for g, c in zip(grid, coarse.shape[-2:])]
    field = np.repeat(np.repeat(coarse, reps[0], axis=-2), reps[1], axis=-1)[..., :grid[0], :grid[1]]
    x = 0.8 * field + 0.2 * rng.uniform(0.0, 1.0, size=field.shape)
    x = x.reshape((n,) + tuple(shape)).astype(np.float32)
    y = np.zeros(n, dtype=np.int64)
    return Split(x[:n_train], y[:n_train]), Split(x[n_train:], y[n_train:])
