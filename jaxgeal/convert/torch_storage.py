"""Tensors of a PyTorch checkpoint rebuilt from its storages, with memory bounded before anything is allocated.

`jaxgeal.convert.torch_pickle` hands each tensor rebuild of the pickle to `Tensors.new` (shape, dtype and view
checked, an empty array allocated) and, once the storage bytes are at hand, `Tensors.fill` copies them in.

Memory: what a load allocates is bounded before anything is allocated, so a small crafted file cannot make it
allocate much more than its own size (or `max_bytes`):
  * every tensor view must lie inside its storage (offset + sum((size_i - 1) * stride_i) < storage elements;
    negative offsets, sizes and strides are refused), and every storage must be in the file: a zip record at
    least as long as the storage the pickle declares, a legacy storage no longer than the file;
  * the tensors of one load together, any one declared storage, and any one zip record (they may be
    compressed) hold at most `max_bytes` (default `MAX_BYTES`, 4 GiB; `load(path, max_bytes=...)` raises it);
  * a view that repeats storage elements (more elements than the storage span it covers: a stride 0, as
    torch's `expand` writes, or overlapping strides) is legitimate in torch, where it shares the storage, but
    here it is copied out in full: such copies together may not exceed the file's own size. A small expanded
    buffer still loads; a 522-byte file whose stride-0 view declares 10^8 floats (400 MB) is refused.
"""

from __future__ import annotations

import collections
import operator
import pathlib
from collections.abc import Callable

import numpy as np

# Default limit on the bytes one `load` allocates for tensors, and on any one declared storage (see module doc).
MAX_BYTES = 4 * 1024**3


class CheckpointFormatError(ValueError):
  """The file is not a readable torch checkpoint (wrong format, truncated, corrupt)."""


class UnsafeCheckpointError(ValueError):
  """The pickle references a global outside the allow-list (it could execute code)."""


class FormatProblem(Exception):
  """A format problem found while unpickling or reading storages; `torch_pickle.load` adds file and record."""


# torch storage classes and dtypes -> numpy dtype names. bfloat16 comes from ml_dtypes (a jax dependency).
STORAGE_DTYPES = {
  "FloatStorage": "float32",
  "DoubleStorage": "float64",
  "HalfStorage": "float16",
  "BFloat16Storage": "bfloat16",
  "LongStorage": "int64",
  "IntStorage": "int32",
  "ShortStorage": "int16",
  "CharStorage": "int8",
  "ByteStorage": "uint8",
  "BoolStorage": "bool",
  "ComplexFloatStorage": "complex64",
  "ComplexDoubleStorage": "complex128",
}
TORCH_DTYPES = {
  "float32": "float32",
  "float": "float32",
  "float64": "float64",
  "double": "float64",
  "float16": "float16",
  "half": "float16",
  "bfloat16": "bfloat16",
  "int64": "int64",
  "long": "int64",
  "int32": "int32",
  "int": "int32",
  "int16": "int16",
  "short": "int16",
  "int8": "int8",
  "uint8": "uint8",
  "uint16": "uint16",
  "uint32": "uint32",
  "uint64": "uint64",
  "bool": "bool",
  "complex64": "complex64",
  "cfloat": "complex64",
  "complex128": "complex128",
  "cdouble": "complex128",
}


def np_dtype(name: str) -> np.dtype:
  if name == "bfloat16":
    import ml_dtypes  # pylint: disable=g-import-not-at-top  (only needed for bf16 checkpoints)

    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(name)


class StorageRef:
  """Where a storage's bytes live: record `key`, bytes [start, start + length), element type."""

  __slots__ = ("key", "dtype", "start", "length")

  def __init__(self, key: str, dtype: np.dtype | None, start: int, length: int):
    self.key, self.dtype, self.start, self.length = key, dtype, start, length


def ints(value, what: str) -> tuple[int, ...]:
  if not isinstance(value, (tuple, list)):
    raise FormatProblem(f"tensor {what} is a {type(value).__name__}, expected a tuple of ints")
  out = tuple(operator.index(v) for v in value)
  if any(v < 0 for v in out):
    raise FormatProblem(f"negative tensor {what} {out}")
  return out


class Tensors:
  """Allocates the tensors the pickle rebuilds and fills them once the storage bytes are at hand.

  The legacy format stores the bytes *after* the pickle, so tensors are created empty while unpickling
  (shape and dtype are known then) and filled afterwards; the zip format uses the same two steps.
  """

  def __init__(self, max_bytes: int, file_size: int):
    self.jobs: list[tuple[StorageRef, int, tuple[int, ...], np.ndarray]] = []
    self.max_bytes, self.file_size = max_bytes, file_size
    self.allocated = 0  # bytes of all tensors so far (limit max_bytes)
    self.repeated = 0  # bytes of the tensors that repeat storage elements (limit: the file's size)

  def new(self, storage, offset, size, stride, dtype: np.dtype | None) -> np.ndarray:
    if not isinstance(storage, StorageRef):
      raise FormatProblem(f"a tensor is rebuilt from a {type(storage).__name__}, not from a storage reference")
    dtype = dtype if dtype is not None else (storage.dtype if storage.dtype is not None else np.dtype("uint8"))
    offset, size, stride = operator.index(offset), ints(size, "size"), ints(stride, "stride")
    if offset < 0 or len(size) != len(stride):
      raise FormatProblem(f"invalid tensor view: offset {offset}, size {size}, stride {stride}")
    available = storage.length // dtype.itemsize
    view = f"tensor view (offset {offset}, size {size}, stride {stride}) of storage {storage.key!r}"
    numel = 1
    for n in size:
      numel *= n
    nbytes = numel * dtype.itemsize
    if numel:  # An empty tensor reads nothing.
      last = offset + sum((n - 1) * s for n, s in zip(size, stride))
      if last >= available:
        raise FormatProblem(f"{view} reads element {last}, but the storage holds {available} {dtype} elements")
      # More elements than the span it covers: some are read more than once (stride 0, overlapping strides).
      if numel > last - offset + 1:
        self.repeated += nbytes
        if self.repeated > self.file_size:
          raise FormatProblem(
            f"{view} repeats storage elements (a stride 0 or overlapping strides): copying it out "
            f"takes {nbytes} bytes ({self.repeated} for all such views), more than the file's "
            f"{self.file_size} bytes; refused as a memory bomb"
          )
    self.allocated += nbytes
    if self.allocated > self.max_bytes:
      raise FormatProblem(
        f"{view} needs {nbytes} bytes of {dtype}, taking the tensors read to {self.allocated} bytes, "
        f"over the limit of {self.max_bytes} (torch_pickle.load(..., max_bytes=N) raises it)"
      )
    out = np.empty(size, dtype)
    self.jobs.append((storage, offset, stride, out))
    return out

  def fill(self, read: Callable[[str], bytes], byteorder: str, path: pathlib.Path):
    by_key: dict[str, list] = collections.defaultdict(list)
    for job in self.jobs:
      if job[-1].size:
        by_key[job[0].key].append(job)
    # One storage's bytes at a time: peak memory is the arrays plus the largest storage.
    try:
      for key, jobs in by_key.items():
        buf = read(key)
        for ref, offset, stride, out in jobs:
          self._copy(buf, ref, offset, stride, out, byteorder)
    except FormatProblem as e:
      raise CheckpointFormatError(f"{path}: {e}") from None

  @staticmethod
  def _copy(buf: bytes, ref: StorageRef, offset: int, stride, out: np.ndarray, byteorder: str):
    if len(buf) < ref.start + ref.length:
      raise FormatProblem(f"storage {ref.key!r} holds {len(buf)} bytes, the pickle needs {ref.start + ref.length}")
    src_dtype = out.dtype.newbyteorder(">") if byteorder == "big" and out.dtype.itemsize > 1 else out.dtype
    flat = np.frombuffer(buf, src_dtype, count=ref.length // out.dtype.itemsize, offset=ref.start)
    # Bounds were checked in `new`, so this strided view stays inside `flat`.
    view = np.lib.stride_tricks.as_strided(
      flat[offset:], out.shape, [s * out.dtype.itemsize for s in stride], writeable=False
    )
    out[...] = view
