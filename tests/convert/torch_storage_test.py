"""Specification of the memory bounds of the torch-free checkpoint reader (`jaxgeal.convert.torch_storage`): every
view inside its storage, and a small crafted file cannot make `torch_pickle.load` allocate much more than its
own size (or `max_bytes`). Checkpoints are written without torch by tests/convert/torch_writers.py.
"""

from __future__ import annotations

import re
import tracemalloc
import zipfile

import numpy as np
import pytest

from jaxgeal.convert import torch_pickle
from jaxgeal.convert.torch_pickle import CheckpointFormatError
from tests.convert.torch_writers import (
  _G,
  WRITERS,
  Call,
  Storage,
  Tensor,
  arange_storage,
  contiguous,
  pickle_bytes,
  write_zip,
)


@pytest.mark.parametrize("fmt", WRITERS)
def test_a_view_beyond_its_storage_is_a_format_error(tmp_path, fmt):
  path = WRITERS[fmt](tmp_path / "oob.pt", {"w": Tensor(arange_storage(n=12), 2, (4, 3), (3, 1))})
  with pytest.raises(CheckpointFormatError, match="oob.pt.*reads element 13"):
    torch_pickle.load(path)


@pytest.mark.parametrize("fmt", WRITERS)
@pytest.mark.parametrize(
  "offset,size,stride,match",
  [
    (12, (1,), (1,), "reads element 12"),  # offset past the end
    (0, (4, 4), (4, 1), "reads element 15"),  # size * stride past the end
    (0, (3,), (-1,), "negative tensor stride"),
    (-1, (3,), (1,), "invalid tensor view"),
  ],
)
def test_views_must_lie_inside_their_storage(tmp_path, fmt, offset, size, stride, match):
  path = WRITERS[fmt](tmp_path / "oob.pt", {"w": Tensor(arange_storage(n=12), offset, size, stride)})
  with pytest.raises(CheckpointFormatError, match=f"oob.pt.*{match}"):
    torch_pickle.load(path)


# --------------------------------------------------------------------------------------------------------
# Memory bombs: a small file must not make the reader allocate much more than its size (or max_bytes).


def _peak_bytes_of(fn):
  """(exception raised by fn or None, peak bytes traced meanwhile; numpy reports its arrays to tracemalloc)."""
  tracemalloc.start()
  try:
    fn()
    err = None
  except Exception as e:  # pylint: disable=broad-except
    err = e
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  return err, peak


@pytest.mark.parametrize("fmt", WRITERS)
def test_a_stride_0_view_cannot_blow_a_tiny_file_up_to_hundreds_of_megabytes(tmp_path, fmt):
  # One float, viewed 10^8 times with stride 0 (torch's expand): 400 MB once copied out.
  one = Storage("0", np.ones(1, np.float32))
  path = WRITERS[fmt](tmp_path / "bomb.pt", {"w": Tensor(one, 0, (10**8,), (0,))})
  assert path.stat().st_size < 1024
  err, peak = _peak_bytes_of(lambda: torch_pickle.load(path))
  assert isinstance(err, CheckpointFormatError) and "bomb.pt" in str(err), err
  assert "repeats storage elements" in str(err) and "(offset 0, size (100000000,), stride (0,))" in str(err)
  assert peak < 10 * 2**20


@pytest.mark.parametrize("fmt", WRITERS)
def test_many_small_expanded_views_share_one_budget_the_size_of_the_file(tmp_path, fmt):
  # Each view alone is smaller than the file; 200 of them (a few bytes of pickle each) are not.
  one = Storage("0", np.ones(1, np.float32))
  path = WRITERS[fmt](tmp_path / "many.pt", [Tensor(one, 0, (100,), (0,)) for _ in range(200)])
  assert 400 < path.stat().st_size < 200 * 100 * 4 / 2
  with pytest.raises(CheckpointFormatError, match="many.pt.*repeats storage elements"):
    torch_pickle.load(path)
  few = WRITERS[fmt](tmp_path / "few.pt", [Tensor(one, 0, (25,), (0,)) for _ in range(2)])
  assert all(np.array_equal(x, np.ones(25, np.float32)) for x in torch_pickle.load(few))


@pytest.mark.parametrize("fmt", WRITERS)
@pytest.mark.parametrize(
  "numel,match",
  [
    (2**40, r"storage '0' declares 4398046511104 bytes, over the limit of 4294967296"),
    (10**6, r"storage '0' declares 4000000 bytes, but the file has room for only"),
  ],
)
def test_a_huge_declared_storage_in_a_tiny_file_is_refused_before_allocating(tmp_path, fmt, numel, match):
  storage = arange_storage(n=4)
  storage.numel = numel  # the pickle claims far more elements than the file holds
  path = WRITERS[fmt](tmp_path / "claim.pt", {"w": Tensor(storage, 0, (numel,), (1,))})
  err, peak = _peak_bytes_of(lambda: torch_pickle.load(path))
  assert isinstance(err, CheckpointFormatError) and "claim.pt" in str(err), err
  assert re.search(match, str(err)), err
  assert peak < 10 * 2**20


@pytest.mark.parametrize("fmt", WRITERS)
def test_max_bytes_bounds_the_total_of_the_tensors(tmp_path, fmt):
  tensors = {"a": contiguous(arange_storage("0", 100), (100,)), "b": contiguous(arange_storage("1", 100), (100,))}
  path = WRITERS[fmt](tmp_path / "two.pt", tensors)
  assert set(torch_pickle.load(path, max_bytes=800)) == {"a", "b"}
  with pytest.raises(
    CheckpointFormatError,
    match=r"two.pt.*taking the tensors read to 800 bytes, over the limit "
    r"of 600 \(torch_pickle.load\(..., max_bytes=N\) raises it\)",
  ):
    torch_pickle.load(path, max_bytes=600)
  assert torch_pickle.MAX_BYTES == 4 * 2**30


def test_a_compressed_storage_record_over_the_limit_is_not_decompressed(tmp_path):
  # A deflated record of 8 MiB of zeros (a few KB on disk) behind a storage that declares 4 floats.
  data, _ = pickle_bytes({"w": contiguous(arange_storage("0", 4), (4,))})
  path = tmp_path / "deflated.pt"
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("archive/data.pkl", data)
    z.writestr("archive/data/0", bytes(8 * 2**20))
  assert path.stat().st_size < 100_000
  err, peak = _peak_bytes_of(lambda: torch_pickle.load(path, max_bytes=2**20))
  assert isinstance(err, CheckpointFormatError), err
  assert re.search(r"deflated.pt.*storage record 'archive/data/0' holds 8388608 bytes, over the limit", str(err))
  assert peak < 2**20


def test_a_numpy_array_cannot_allocate_memory_the_file_does_not_hold(tmp_path):
  # numpy pickles arrays as _reconstruct(ndarray, (0,), b'b') + BUILD; a larger shape allocates unbacked memory.
  big = Call("numpy.core.multiarray", "_reconstruct", _G("numpy", "ndarray"), (10**9,), b"b")
  path = write_zip(tmp_path / "ndarray.pt", {"args": big})
  with pytest.raises(CheckpointFormatError, match=r"ndarray.pt.*shape \(1000000000,\) would allocate"):
    torch_pickle.load(path)
