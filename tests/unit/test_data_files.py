"""User data files read by the zoo tools: calibration arrays (`npy:FILE` of `nnc quantize` and
`nnc quantize-pt2e`, models.data.read_npy_inputs) and MNIST IDX files (`--data mnist:DIR`,
models.data.read_idx / mnist). Every hostile file is a DataError naming the file, never numpy's
or struct's exception, and memory stays bounded whatever a header declares."""
import gzip
import struct

import numpy as np
import pytest

from models.data import DataError, mnist, read_idx, read_npy_inputs

SAMPLE = (1, 4, 4)


def _npy_header(shape, descr="<f4"):
    head = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    head += " " * (118 - len(head)) + "\n"
    return b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head.encode()


HOSTILE_NPY = {
    "empty file": lambda p: p.write_bytes(b""),
    "text": lambda p: p.write_text("1 2 3\n"),
    "object array": lambda p: np.save(p, np.array([object()], dtype=object), allow_pickle=True),
    "strings": lambda p: np.save(p, np.array(["a", "b"])),
    "complex": lambda p: np.save(p, np.ones((3,) + SAMPLE, np.complex64)),
    "dates": lambda p: np.save(p, np.array(["2020-01-01"] * 3, dtype="datetime64[D]")),
    "npz archive": lambda p: np.savez(open(p, "wb"), x=np.zeros((3,) + SAMPLE, np.float32)),
    "no inputs": lambda p: np.save(p, np.zeros((0,) + SAMPLE, np.float32)),
    "wrong shape, same size": lambda p: np.save(p, np.zeros((4, 16), np.float32)),
    "a scalar": lambda p: np.save(p, np.float32(1)),
    "NaN": lambda p: np.save(p, np.where(np.arange(3 * 16).reshape((3,) + SAMPLE) == 20, np.nan, 0.5)),
    "inf": lambda p: np.save(p, np.full((3,) + SAMPLE, np.inf, np.float32)),
    "huge declared shape": lambda p: p.write_bytes(_npy_header((10 ** 12,) + SAMPLE) + bytes(64)),
}


@pytest.mark.parametrize("what", sorted(HOSTILE_NPY))
def test_hostile_calibration_arrays_are_refused(tmp_path, what):
    path = tmp_path / "calib.npy"
    HOSTILE_NPY[what](path)
    with pytest.raises(DataError) as e:
        read_npy_inputs(str(path), SAMPLE, 8)
    assert str(path) in e.value.what and e.value.fix, str(e.value)
    if what == "NaN":
        assert "input 1 holds NaN" in e.value.what


def test_calibration_array_shapes_accepted(tmp_path):
    x = np.random.default_rng(0).random((10,) + SAMPLE).astype(np.float64)
    for saved in (x, x[:, None], (x * 255).astype(np.uint8)):
        np.save(tmp_path / "c.npy", saved)
        got = read_npy_inputs(str(tmp_path / "c.npy"), SAMPLE, 6)
        assert got.shape == (6,) + SAMPLE and got.dtype == np.float32
        assert np.array_equal(got, saved.reshape((-1,) + SAMPLE)[:6].astype(np.float32))


def _idx(dims, payload=None, magic=b"\x00\x00\x08"):
    body = bytes(int(np.prod(dims))) if payload is None else payload
    return magic + bytes([len(dims)]) + struct.pack(">" + "I" * len(dims), *dims) + body


HOSTILE_IDX = {
    "wrong magic": b"\x00\x00\x0d\x03" + bytes(20),
    "too short": b"\x00\x00",
    "header truncated": _idx((2, 28, 28))[:9],
    "payload truncated": _idx((2, 28, 28))[:100],
    "extra bytes": _idx((2, 3, 3)) + b"\x00",
    "huge dims": _idx((2 ** 32 - 1, 2 ** 32 - 1, 2 ** 32 - 1), b""),
    "wrong rank": _idx((2, 3)),
}


@pytest.mark.parametrize("what", sorted(HOSTILE_IDX))
def test_hostile_idx_files_are_refused(tmp_path, what):
    path = tmp_path / "images.idx"
    path.write_bytes(HOSTILE_IDX[what])
    with pytest.raises(DataError) as e:
        read_idx(str(path), 3)
    assert str(path) in e.value.what


def test_idx_gzip_bomb_and_damaged_gzip_are_refused(tmp_path):
    bomb = tmp_path / "bomb.gz"   # declares 1000 images of 28x28 but unpacks to 64 MB more
    with gzip.open(bomb, "wb") as f:
        f.write(_idx((1000, 28, 28)))
        f.write(bytes(64 << 20))
    with pytest.raises(DataError, match="holds more"):
        read_idx(str(bomb), 3)
    damaged = tmp_path / "damaged.gz"
    damaged.write_bytes(gzip.compress(_idx((2, 28, 28)))[:-12] + b"garbage!")
    with pytest.raises(DataError, match="cannot read it as an IDX file|truncated"):
        read_idx(str(damaged), 3)


def test_mnist_labels_out_of_range_or_counts_that_differ(tmp_path):
    def write(images, labels):
        for part, (img, lbl) in {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}.items():
            (tmp_path / img).write_bytes(_idx(images.shape, images.tobytes()))
            (tmp_path / lbl).write_bytes(_idx(labels.shape, labels.tobytes()))
    write(np.zeros((3, 28, 28), np.uint8), np.array([1, 2, 200], np.uint8))
    with pytest.raises(DataError, match="label 200"):
        mnist(str(tmp_path))
    write(np.zeros((3, 28, 28), np.uint8), np.array([1, 2], np.uint8))
    with pytest.raises(DataError, match="labels"):
        mnist(str(tmp_path))
    write(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8))
    with pytest.raises(DataError, match="at least one"):
        mnist(str(tmp_path))
    write(np.full((3, 28, 28), 255, np.uint8), np.array([0, 9, 5], np.uint8))
    train, test = mnist(str(tmp_path))
    assert train.x.shape == (3, 1, 28, 28) and float(train.x.max()) == 1.0
