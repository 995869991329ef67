"""IDX reader on files written here; digits; Fashion-MNIST from Debian's package when installed."""

import gzip
import struct

import numpy as np
import pytest

from divmin.data import fashion_mnist, find_fashion_mnist, load_digits_images, read_idx


def write_idx(path, arr, code):
    """An IDX file written from the format's definition (independent of read_idx)."""
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", n) for n in arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    (gzip.open if str(path).endswith(".gz") else open)(path, "wb").write(data)


@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int16, 0x0B), (np.int32, 0x0C), (np.float32, 0x0D),
                                        (np.float64, 0x0E)])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, dtype, code, suffix):
    arr = (np.arange(24).reshape(2, 3, 4) * 3 - (0 if dtype == np.uint8 else 30)).astype(dtype)
    write_idx(tmp_path / f"a-idx3-ubyte{suffix}", arr, code)
    got = read_idx(tmp_path / f"a-idx3-ubyte{suffix}")
    assert got.dtype == np.dtype(dtype) and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, arr)


def test_read_idx_refuses_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2]))
    with pytest.raises(ValueError, match="expected 3"):
        read_idx(tmp_path / "short")
    with pytest.raises(FileNotFoundError, match="path"):
        read_idx(tmp_path / "missing")


def test_fashion_mnist_from_a_root_of_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 5), ("t10k", 3)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), 8)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8), 8)
    x, y = fashion_mnist("test", root=tmp_path)
    assert tuple(x.shape) == (3, 1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert y.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="split"):
        fashion_mnist("val", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        fashion_mnist(root=tmp_path / "nowhere")


def test_debian_fashion_mnist_when_installed():
    if find_fashion_mnist() is None:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    x, y = fashion_mnist("test")
    assert tuple(x.shape) == (10000, 1, 28, 28) and sorted(set(y.tolist())) == list(range(10))


def test_digits_images():
    pytest.importorskip("sklearn")
    x, y = load_digits_images()
    assert tuple(x.shape) == (1797, 1, 8, 8) and float(x.max()) == 1.0 and float(x.min()) == 0.0
    assert np.bincount(y.numpy()).min() >= 170
