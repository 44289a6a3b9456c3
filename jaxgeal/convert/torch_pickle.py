"""Torch-free, code-execution-free reader of PyTorch `.pt` / `.pth` checkpoints (`torch.save` output).

Every upstream model we convert (wpeebles/gangealing, rosinality/stylegan2-pytorch, LPIPS, and
taesungp/swapping-autoencoder-pytorch) ships its weights as a pickled structure of (Ordered)dicts of tensors.
`load` returns that structure with every tensor as a C-contiguous `numpy.ndarray` (its own copy, native byte
order; strides and storage offsets honoured), without importing torch and without running pickled code.

Container formats (as torch/serialization.py writes them):
  * zip (torch >= 1.6): records `<folder>/data.pkl` (the pickle), `<folder>/data/<key>` (raw bytes of each
    storage), optional `<folder>/byteorder`. The pickle refers to storages by persistent id
    `('storage', storage_type, key, location, numel)`; `numel` counts elements of `storage_type`
    (`torch.FloatStorage`, ...) or bytes for `torch.UntypedStorage`.
  * legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): consecutive pickles of the magic number,
    the protocol version (1001) and a sys-info dict; the main pickle, whose persistent ids are
    `('storage', storage_type, root_key, location, numel, view_metadata)`; the list of storage keys; then per
    key an int64 little-endian element count followed by the raw little-endian bytes.
Tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` calls (`_rebuild_tensor` in
old files; `_rebuild_tensor_v3(..., dtype)` over an UntypedStorage for dtypes without a legacy storage class).
Storage locations ('cuda:0', ...) are ignored: everything is read to host memory.
Safety: the unpickler resolves globals only from an explicit allow-list, mapped to our own small
re-implementations (never to torch). Any other global (`os.system`, `builtins.eval`, a model class, ...)
raises `UnsafeCheckpointError` before anything is called. The allow-listed objects are fresh per load and
refuse pickle's BUILD, so a file cannot tamper with them.

What comes back for the non-tensor objects:
  * `torch.nn.Parameter` -> its array; `torch.Size` -> tuple; `torch.device` -> str such as 'cuda:0';
    torch dtypes (only as rebuild arguments) -> numpy dtypes.
  * `argparse.Namespace` (GANgealing / rosinality training checkpoints pickle their `args`) ->
    `types.SimpleNamespace` with the same attributes (`vars(ns)` gives the dict).
  * dict / OrderedDict (with torch's `_metadata` attribute when the file has one), list, tuple, set, numbers,
    str, bytes, None as pickled; numpy scalars, dtypes and arrays (e.g. inside `args`) as numpy objects.

Memory: what a load allocates is bounded before anything is allocated (jaxgeal.convert.torch_storage).

Errors: `FileNotFoundError`; `CheckpointFormatError` (not a torch checkpoint, truncated, corrupt, missing
storage record, out-of-bounds view, over the memory limits above) and `UnsafeCheckpointError` (refused
global), ValueErrors naming the file.
"""

from __future__ import annotations

import collections
import errno
import io
import operator
import os
import pathlib
import pickle
import tarfile
import types
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxgeal.convert.torch_storage import (
  MAX_BYTES,
  STORAGE_DTYPES,
  TORCH_DTYPES,
  CheckpointFormatError,
  FormatProblem,
  StorageRef,
  Tensors,
  UnsafeCheckpointError,
  ints,
  np_dtype,
)

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class _Inert:
  """Base of the objects the allow-list hands to the unpickler: immutable, and BUILD on them fails."""

  __slots__ = ("name",)

  def __init__(self, name: str):
    object.__setattr__(self, "name", name)

  def __setattr__(self, key, value):
    raise FormatProblem(f"the pickle tries to set attribute {key!r} of {self.name}")

  def __setstate__(self, state):
    raise FormatProblem(f"the pickle tries to BUILD (set the state of) {self.name}")

  def __repr__(self):
    return f"<{type(self).__name__} {self.name}>"


class _SafeCallable(_Inert):
  """An allow-listed callable global, mapped to our own re-implementation."""

  __slots__ = ("_fn",)

  def __init__(self, name: str, fn: Callable[..., Any]):
    super().__init__(name)
    object.__setattr__(self, "_fn", fn)

  def __call__(self, *args, **kwargs):
    return self._fn(*args, **kwargs)


class _StorageType(_Inert):
  """`torch.FloatStorage` & co. (dtype set) or `torch.UntypedStorage` (dtype None: bytes)."""

  __slots__ = ("dtype",)

  def __init__(self, name: str, dtype: np.dtype | None):
    super().__init__(name)
    object.__setattr__(self, "dtype", dtype)


class _DtypeMarker(_StorageType):
  """A torch dtype global (`torch.float16`), as passed to `_rebuild_tensor_v3`."""

  __slots__ = ()


def _allowed_globals(tensors: Tensors) -> dict[tuple[str, str], Any]:
  """The allow-list: (module, name) -> the object the unpickler gets instead of the real global."""
  allowed: dict[tuple[str, str], Any] = {}

  def add(modules, name, obj):
    for module in modules:
      allowed[(module, name)] = obj

  def rebuild_tensor(storage, storage_offset, size, stride):
    return tensors.new(storage, storage_offset, size, stride, None)

  def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    del requires_grad, backward_hooks, metadata  # Autograd state has no meaning for arrays.
    return tensors.new(storage, storage_offset, size, stride, None)

  def rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    del requires_grad, backward_hooks, metadata
    if not isinstance(dtype, _DtypeMarker):
      raise FormatProblem(f"_rebuild_tensor_v3 got dtype {dtype!r}, expected a torch dtype")
    return tensors.new(storage, storage_offset, size, stride, dtype.dtype)

  def rebuild_parameter(data, requires_grad=True, backward_hooks=None, state=None):
    del requires_grad, backward_hooks, state  # A Parameter is read as its data.
    return data

  def rebuild_from_type_v2(func, new_type, args, state):
    del new_type, state  # Tensor subclass and Python attributes are dropped: the data is what we need.
    if not isinstance(func, _SafeCallable):
      raise FormatProblem(f"_rebuild_from_type_v2 got function {func!r}")
    return func(*args)

  tu = ("torch._utils",)
  add(tu, "_rebuild_tensor", _SafeCallable("torch._utils._rebuild_tensor", rebuild_tensor))
  add(tu, "_rebuild_tensor_v2", _SafeCallable("torch._utils._rebuild_tensor_v2", rebuild_tensor_v2))
  add(tu, "_rebuild_tensor_v3", _SafeCallable("torch._utils._rebuild_tensor_v3", rebuild_tensor_v3))
  add(tu, "_rebuild_parameter", _SafeCallable("torch._utils._rebuild_parameter", rebuild_parameter))
  add(
    tu, "_rebuild_parameter_with_state", _SafeCallable("torch._utils._rebuild_parameter_with_state", rebuild_parameter)
  )
  add(
    ("torch._tensor",),
    "_rebuild_from_type_v2",
    _SafeCallable("torch._tensor._rebuild_from_type_v2", rebuild_from_type_v2),
  )
  add(("torch",), "Tensor", _Inert("torch.Tensor"))
  add(("torch.nn.parameter",), "Parameter", _Inert("torch.nn.parameter.Parameter"))
  for name, dtype in STORAGE_DTYPES.items():
    # Old files may name the CUDA classes; the bytes are the same.
    add(("torch", "torch.cuda"), name, _StorageType(f"torch.{name}", np_dtype(dtype)))
  add(("torch", "torch.storage"), "UntypedStorage", _StorageType("torch.UntypedStorage", None))
  for name, dtype in TORCH_DTYPES.items():
    add(("torch",), name, _DtypeMarker(f"torch.{name}", np_dtype(dtype)))
  add(("torch",), "Size", _SafeCallable("torch.Size", lambda dims=(): tuple(operator.index(d) for d in dims)))
  add(("torch",), "device", _SafeCallable("torch.device", _device))

  add(("collections",), "OrderedDict", collections.OrderedDict)
  # argparse.Namespace is a plain attribute bag; SimpleNamespace has the same pickle protocol (NEWOBJ/BUILD).
  add(("argparse",), "Namespace", types.SimpleNamespace)
  add(("copyreg", "copy_reg"), "_reconstructor", _SafeCallable("copyreg._reconstructor", _reconstructor))
  add(("builtins", "__builtin__"), "object", _OBJECT)
  for t in (set, frozenset, complex):
    add(("builtins", "__builtin__"), t.__name__, t)
  for t in (bytes, bytearray):  # Protocol 2 writes empty bytes as bytes() and bytearrays as bytearray(...).
    add(("builtins", "__builtin__"), t.__name__, _SafeCallable(f"builtins.{t.__name__}", _byte_string(t)))
  # Protocol 2 (torch's default) writes bytes as _codecs.encode(latin-1 text, 'latin1').
  add(("_codecs",), "encode", _SafeCallable("_codecs.encode", _codecs_encode))

  np_core = ("numpy.core.multiarray", "numpy._core.multiarray")
  add(np_core, "scalar", _SafeCallable("numpy.core.multiarray.scalar", _numpy_scalar))
  add(np_core, "_reconstruct", _SafeCallable("numpy.core.multiarray._reconstruct", _numpy_reconstruct))
  add(
    ("numpy.core.numeric", "numpy._core.numeric"),
    "_frombuffer",
    _SafeCallable("numpy.core.numeric._frombuffer", _numpy_frombuffer),
  )  # Protocol 5 arrays.
  add(("numpy",), "ndarray", _NDARRAY)
  add(("numpy",), "dtype", _SafeCallable("numpy.dtype", _numpy_dtype))
  return allowed


_OBJECT = _Inert("builtins.object")
_NDARRAY = _Inert("numpy.ndarray")


def _device(kind, index=None):
  return str(kind) if index is None else f"{kind}:{operator.index(index)}"


def _reconstructor(cls, base, state):
  # Protocol 0/1 pickles of plain classes (argparse.Namespace); only `object`-based records are allowed.
  if base is not _OBJECT or state is not None or cls is not types.SimpleNamespace:
    raise FormatProblem(f"copyreg._reconstructor({cls!r}, {base!r}, ...) is not an allowed record")
  return types.SimpleNamespace()


def _byte_string(cls):
  def make(data=b"", *args):
    if isinstance(data, int):  # bytes(n) would allocate n zero bytes: never written by pickle.
      raise FormatProblem(f"{cls.__name__}({data}) is not allowed")
    return cls(data, *args)

  return make


def _codecs_encode(text, encoding="utf-8"):
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
    raise FormatProblem(f"_codecs.encode called with {type(text).__name__}, {encoding!r}")
  return text.encode("latin-1")


def _numpy_dtype(spec, align=False, copy=False):
  del copy  # Always a fresh copy: numpy's BUILD then never touches a shared builtin dtype.
  if not isinstance(spec, str):
    raise FormatProblem(f"numpy.dtype({spec!r}) is not allowed")
  return np.dtype(spec, align=bool(align), copy=True)


def _numpy_scalar(dtype, data=None):
  if not isinstance(dtype, np.dtype):
    raise FormatProblem(f"numpy scalar with dtype {dtype!r}")
  if dtype.hasobject:
    return data  # numpy pickles object scalars as the (already unpickled) object itself.
  if not isinstance(data, bytes) or len(data) != dtype.itemsize:
    raise FormatProblem(f"numpy scalar of {dtype} with {type(data).__name__} payload")
  return np.frombuffer(data, dtype)[0]


def _numpy_reconstruct(cls, shape, typecode):
  if cls is not _NDARRAY:
    raise FormatProblem(f"numpy _reconstruct of {cls!r}")
  shape = ints(shape, "shape")
  if any(n != 0 for n in shape):  # numpy writes (0,): BUILD then sets shape and data from the pickle's bytes.
    raise FormatProblem(f"numpy _reconstruct with shape {shape} would allocate memory not backed by the file")
  return np.ndarray.__new__(np.ndarray, shape, typecode)


def _numpy_frombuffer(buf, dtype, shape, order):
  if not isinstance(dtype, np.dtype) or dtype.hasobject or order not in ("C", "F"):
    raise FormatProblem(f"numpy _frombuffer with dtype {dtype!r}, order {order!r}")
  return np.frombuffer(buf, dtype).reshape(ints(shape, "shape"), order=order).copy()


class _RestrictedUnpickler(pickle.Unpickler):
  """pickle.Unpickler whose globals come only from `allowed` and whose storages come from `storage`."""

  def __init__(self, file, path, record, allowed, storage: Callable[[tuple], StorageRef] | None):
    super().__init__(file, encoding="utf-8")  # torch.load's choice for Python-2 strings.
    self._path, self._record, self._allowed, self._storage = path, record, allowed, storage

  def find_class(self, module, name):
    obj = self._allowed.get((module, name))
    if obj is None:
      raise UnsafeCheckpointError(
        f"{self._path}: refused to load global '{module}.{name}' from {self._record}: only tensors, "
        "storages, containers, argparse.Namespace and numpy scalars are allowed in a checkpoint"
      )
    return obj

  def persistent_load(self, pid):
    if self._storage is None:
      raise FormatProblem(f"unexpected persistent id {pid!r:.80}")
    # An exact type check: a dtype marker (a _StorageType subclass) is not a storage.
    is_storage = isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and type(pid[1]) is _StorageType
    if not is_storage:
      raise FormatProblem(f"unsupported persistent id {pid!r:.120} (only tensor storages are supported)")
    return self._storage(pid)


def _unpickle(file, path, record, allowed, storage=None):
  try:
    return _RestrictedUnpickler(file, path, record, allowed, storage).load()
  except (UnsafeCheckpointError, CheckpointFormatError):
    raise
  except FormatProblem as e:
    raise CheckpointFormatError(f"{path}: {record}: {e}") from None
  except Exception as e:  # pylint: disable=broad-except  (any failure of a corrupt pickle is a format error)
    raise CheckpointFormatError(f"{path}: {record}: corrupt or truncated pickle ({type(e).__name__}: {e})") from e


def _storage_ref(pid, legacy: bool, available: Callable[[str], int], max_bytes: int) -> StorageRef:
  """Persistent id -> byte range of the storage, in elements of its storage type. `available(key)`: how many
  bytes the file can hold for the storage (its zip record's size; the file's size for the legacy format)."""
  stype, key, numel = pid[1], str(pid[2]), ints((pid[4],), "storage size")[0]
  itemsize = stype.dtype.itemsize if stype.dtype is not None else 1
  declared = numel * itemsize
  if declared > max_bytes:
    raise FormatProblem(
      f"storage {key!r} declares {declared} bytes, over the limit of {max_bytes} "
      "(torch_pickle.load(..., max_bytes=N) raises it)"
    )
  if declared > available(key):
    raise FormatProblem(f"storage {key!r} declares {declared} bytes, but the file has room for only {available(key)}")
  view = pid[5] if legacy and len(pid) > 5 else None
  if view is None:
    return StorageRef(key, stype.dtype, 0, numel * itemsize)
  # Legacy storage views: (view_key, offset, size) in elements of the root storage `key`.
  _, offset, size = view
  offset, size = operator.index(offset), operator.index(size)
  if offset < 0 or size < 0 or offset + size > numel:
    raise FormatProblem(f"storage view {view!r} outside root storage {key!r} of {numel} elements")
  return StorageRef(key, stype.dtype, offset * itemsize, size * itemsize)


def _load_zip(path: pathlib.Path, max_bytes: int) -> Any:
  try:
    archive = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError, ValueError) as e:
    raise CheckpointFormatError(
      f"{path}: starts like a zip archive but cannot be opened as one ({e}); the file is truncated or corrupt"
    ) from None
  with archive:
    names = archive.namelist()
    # torch reads the folder of the first record; fall back to the one `<folder>/data.pkl` there is.
    first = names[0].split("/")[0] if names else ""
    candidates = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    pkl = f"{first}/data.pkl" if f"{first}/data.pkl" in names else (candidates[0] if len(candidates) == 1 else None)
    if pkl is None:
      hint = " (a TorchScript archive?)" if any(n.endswith("constants.pkl") for n in names) else ""
      raise CheckpointFormatError(
        f"{path}: zip archive without a '<folder>/data.pkl' record, so not a "
        f"torch.save checkpoint{hint}; records: {names[:5]}"
      )
    prefix = pkl[: -len("data.pkl")]
    byteorder = "little"
    if f"{prefix}byteorder" in names:
      byteorder = archive.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
      if byteorder not in ("little", "big"):
        raise CheckpointFormatError(f"{path}: unknown byteorder record {byteorder!r}")

    def record_size(key):
      name = f"{prefix}data/{key}"
      try:
        size = archive.getinfo(name).file_size  # declared in the archive, checked by zipfile while reading
      except KeyError:
        raise FormatProblem(f"missing storage record {name!r}") from None
      if size > max_bytes:
        raise FormatProblem(
          f"storage record {name!r} holds {size} bytes, over the limit of {max_bytes} "
          "(torch_pickle.load(..., max_bytes=N) raises it)"
        )
      return size

    def read(key):
      name = f"{prefix}data/{key}"
      record_size(key)
      try:
        return archive.read(name)
      except KeyError:
        raise FormatProblem(f"missing storage record {name!r}") from None
      except Exception as e:  # pylint: disable=broad-except  (bad CRC, truncated, unsupported compression)
        raise FormatProblem(f"storage record {name!r} is corrupt ({type(e).__name__}: {e})") from None

    tensors = Tensors(max_bytes, os.stat(path).st_size)
    allowed = _allowed_globals(tensors)
    try:
      data = archive.read(pkl)
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointFormatError(f"{path}: record {pkl!r} is corrupt ({type(e).__name__}: {e})") from None
    result = _unpickle(
      io.BytesIO(data), path, pkl, allowed, lambda pid: _storage_ref(pid, False, record_size, max_bytes)
    )
    tensors.fill(read, byteorder, path)
  return result


def _load_legacy(path: pathlib.Path, head: bytes, max_bytes: int) -> Any:
  with open(path, "rb") as f:
    no_globals: dict = {}
    try:
      magic = _RestrictedUnpickler(f, path, "magic number", no_globals, None).load()
    except Exception:  # pylint: disable=broad-except
      magic = None
    if magic != _LEGACY_MAGIC:
      kind = (
        "a tar archive (torch < 0.1.10 format, unsupported)"
        if tarfile.is_tarfile(path)
        else (f"neither a zip archive (torch >= 1.6) nor a legacy torch pickle; it starts with {head[:8]!r}")
      )
      raise CheckpointFormatError(f"{path}: not a PyTorch checkpoint: {kind}")
    protocol = _unpickle(f, path, "protocol version", no_globals)
    if protocol != _LEGACY_PROTOCOL:
      raise CheckpointFormatError(f"{path}: legacy protocol version {protocol!r}, expected {_LEGACY_PROTOCOL}")
    sys_info = _unpickle(f, path, "sys info", no_globals)
    if not isinstance(sys_info, dict):
      raise CheckpointFormatError(f"{path}: legacy sys info is a {type(sys_info).__name__}, expected dict")

    file_size = os.fstat(f.fileno()).st_size
    tensors = Tensors(max_bytes, file_size)
    itemsizes: dict[str, int] = {}

    def storage(pid):
      ref = _storage_ref(pid, True, lambda key: file_size, max_bytes)
      itemsizes[ref.key] = pid[1].dtype.itemsize if pid[1].dtype is not None else 1
      return ref

    result = _unpickle(f, path, "main pickle", _allowed_globals(tensors), storage)
    keys = _unpickle(f, path, "storage key list", no_globals)
    if not isinstance(keys, list):
      raise CheckpointFormatError(f"{path}: legacy storage key list is a {type(keys).__name__}")
    # The storage bytes follow in key order: int64 LE element count, then the elements (little endian:
    # torch converts on write). Element sizes come from the storage types seen in the main pickle. Records
    # are only located here, and read one at a time while filling the tensors.
    spans = {}
    for key in map(str, keys):
      if key not in itemsizes:
        raise CheckpointFormatError(f"{path}: storage {key!r} is listed but never referenced by the pickle")
      header = f.read(8)
      numel = int.from_bytes(header, "little", signed=True)
      spans[key] = (f.tell(), numel * itemsizes[key])
      if len(header) < 8 or numel < 0 or sum(spans[key]) > file_size:
        raise CheckpointFormatError(
          f"{path}: truncated: storage {key!r} ends past the end of the file ({file_size} bytes)"
        )
      f.seek(sum(spans[key]))

    def read(key):
      if key not in spans:
        raise FormatProblem(f"storage {key!r} is not in the file's storage table")
      f.seek(spans[key][0])
      return f.read(spans[key][1])

    tensors.fill(read, "little", path)
  return result


def load(path, max_bytes: int = MAX_BYTES) -> Any:
  """Reads a torch `.pt`/`.pth` file (zip or legacy format) with tensors as numpy arrays; see module doc.
  `max_bytes` bounds the tensors' total size and any one storage's (a CheckpointFormatError beyond it)."""
  path = pathlib.Path(os.fspath(path))
  if not path.is_file():
    if path.is_dir():
      raise CheckpointFormatError(f"{path}: is a directory, not a checkpoint file")
    raise FileNotFoundError(errno.ENOENT, "no such checkpoint file", str(path))
  with open(path, "rb") as f:
    head = f.read(16)
  if not head:
    raise CheckpointFormatError(f"{path}: empty file, not a PyTorch checkpoint")
  if head.startswith(b"PK"):
    return _load_zip(path, max_bytes)
  return _load_legacy(path, head, max_bytes)
