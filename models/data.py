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
import math
import os
import struct
import zlib
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


# The most a data file may unpack to: the MNIST training images are 47 MB; a .gz bomb or a
# header with huge dimensions declares far more, and is refused before anything is allocated.
MAX_DATA_BYTES = 1 << 30


def read_idx(path: str, ndim_expected: int = None) -> np.ndarray:
    """An unsigned-byte IDX array; the header is checked before its payload is read, and only
    the bytes it declares are read (a lying header or a .gz bomb cannot exhaust memory)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4:
                raise DataError(f"{path}: not an IDX file (too short)")
            zero, dtype_code, ndim = struct.unpack(">HBB", head)
            if zero != 0 or dtype_code != 0x08:
                raise DataError(f"{path}: not an unsigned-byte IDX file (magic {head.hex()})")
            if ndim_expected is not None and ndim != ndim_expected:
                raise DataError(f"{path}: an IDX file of {ndim} dimensions; {ndim_expected} expected "
                                "(images: count, rows, columns; labels: count)")
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path}: IDX header truncated ({len(raw_dims)} of {4 * ndim} dimension bytes)")
            dims = struct.unpack(">" + "I" * ndim, raw_dims)
            size = math.prod(dims)
            if size > MAX_DATA_BYTES:
                raise DataError(f"{path}: header says {dims}, {size:,} bytes: more than the "
                                f"{MAX_DATA_BYTES:,} a data file may hold (damaged, or not MNIST)")
            data = f.read(size + 1)
    except (OSError, EOFError, zlib.error) as e:   # a damaged .gz, a folder, no permission
        raise DataError(f"{path}: cannot read it as an IDX file ({type(e).__name__}: {e})") from None
    if len(data) != size:
        raise DataError(f"{path}: header says {dims} ({size:,} bytes) but holds "
                        f"{'more' if len(data) > size else f'{len(data):,}'} bytes (truncated or damaged?)")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def mnist(directory: str, size: int = 28) -> tuple[Split, Split]:
    if not os.path.isdir(directory):
        raise DataError(f"MNIST directory {directory!r} does not exist")
    splits = []
    for part in ("train", "test"):
        img_name, lbl_name = _IDX_NAMES[part]
        imgs = read_idx(_find_idx(directory, img_name), 3)
        lbls = read_idx(_find_idx(directory, lbl_name), 1)
        if len(imgs) != len(lbls) or not len(imgs) or not imgs.shape[1] or not imgs.shape[2]:
            raise DataError(f"MNIST {part}: {imgs.shape} images and {len(lbls)} labels; the same "
                            "number (at least one) of each, images of at least 1x1, expected")
        if lbls.max() > 9:
            raise DataError(f"MNIST {part}: label {int(lbls.max())} found, digits 0..9 expected "
                            f"({_find_idx(directory, lbl_name)})")
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


def read_npy_inputs(path: str, sample_shape: tuple, n: int, what: str = "calibration") -> np.ndarray:
    """The first n inputs of an .npy file of shape (N, *sample_shape) (or (N, 1, *sample_shape)) as
    float32. Read without pickle and memory-mapped: only those n inputs are loaded, whatever the
    header declares. Refused: no inputs, another shape, values that are not real numbers (strings,
    complex, dates), NaN or infinite values."""
    fix = f"save a float32 array of shape (N, {', '.join(map(str, sample_shape))}) with numpy.save(PATH, x)"
    if not os.path.isfile(path):
        raise DataError(f"{what} file {path!r} does not exist", f"file {path}", fix)
    try:   # allow_pickle=False: an object array (a pickle) is refused, never unpickled
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{what} file {path!r} is not a readable numeric .npy array ({e})", f"file {path}", fix) from None
    if not isinstance(a, np.ndarray):   # an .npz archive
        raise DataError(f"{what} file {path!r} is an .npz archive, not one .npy array", f"file {path}", fix)
    if a.dtype.kind not in "biuf":
        raise DataError(f"{what} file {path!r} holds {a.dtype} values, not real numbers", f"file {path}", fix)
    sample_shape = tuple(sample_shape)
    if a.ndim < 1 or a.shape[1:] not in (sample_shape, (1,) + sample_shape):
        raise DataError(f"{what} file {path!r} holds an array of shape {a.shape}; inputs of shape "
                        f"{sample_shape} expected", f"file {path}", fix)
    if not len(a):
        raise DataError(f"{what} file {path!r} holds no inputs (shape {a.shape})", f"file {path}", fix)
    x = np.asarray(a[:n], dtype=np.float32).reshape((-1,) + sample_shape)
    finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if not finite.all():
        raise DataError(f"{what} file {path!r}: input {int(np.argmin(finite))} holds NaN or infinite "
                        "values", f"file {path}", "replace them (e.g. numpy.nan_to_num) or leave those inputs out")
    return x


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
