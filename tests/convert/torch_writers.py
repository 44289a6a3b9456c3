"""Torch-format checkpoints written without torch, for the reader's tests.

`_TorchLikePickler` is the standard pure-Python pickler plus `_G(module, name)` references that it writes as
GLOBAL opcodes (torch's names without importing torch), and stand-in storages that it writes as torch's
persistent ids. `write_zip` / `write_legacy` lay them out exactly as torch/serialization.py does for the two
container formats.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np


class _G:
  """Reference to a global `module.name`, written as a GLOBAL opcode (callable so save_reduce accepts it)."""

  def __init__(self, module: str, name: str):
    self.module, self.name = module, name

  def __call__(self, *args):
    raise AssertionError("never called: only pickled")


class Storage:
  """A torch storage stand-in: `values` (1-D numpy) stored as `type_name` under record `key`."""

  def __init__(
    self, key: str, values: np.ndarray, type_name: str = "FloatStorage", location: str = "cpu", byteorder: str = "<"
  ):
    self.key, self.type_name, self.location = key, type_name, location
    self.values = np.asarray(values).ravel()
    self.data = self.values.astype(self.values.dtype.newbyteorder(byteorder)).tobytes()
    self.numel = len(self.data) if type_name == "UntypedStorage" else self.values.size


class Tensor:
  """`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())` (v3 with dtype)."""

  def __init__(self, storage: Storage, offset: int, size, stride, dtype: str | None = None):
    self.storage, self.offset, self.size, self.stride, self.dtype = storage, offset, size, stride, dtype

  def __reduce__(self):
    args = (self.storage, self.offset, tuple(self.size), tuple(self.stride), False, collections.OrderedDict())
    if self.dtype is None:
      return _G("torch._utils", "_rebuild_tensor_v2"), args
    return _G("torch._utils", "_rebuild_tensor_v3"), args + (_G("torch", self.dtype),)


class StorageView:
  """A legacy-format storage view: elements [offset, offset + size) of `root`, known as `key`."""

  def __init__(self, root: Storage, key: str, offset: int, size: int):
    self.root, self.key, self.offset, self.size = root, key, offset, size


def contiguous(storage: Storage, shape) -> Tensor:
  stride = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
  return Tensor(storage, 0, tuple(shape), stride)


class Call:
  """Pickles as `module.name(*args)`: torch.Size, Parameter rebuilds, and the malicious payloads."""

  def __init__(self, module: str, name: str, *args):
    self.func, self.args = _G(module, name), args

  def __reduce__(self):
    return self.func, self.args


class _TorchLikePickler(pickle._Pickler):  # pylint: disable=protected-access  (pure-Python dispatch table)
  dispatch = pickle._Pickler.dispatch.copy()  # pylint: disable=protected-access

  def __init__(self, file, legacy: bool):
    super().__init__(file, protocol=2)  # torch's DEFAULT_PROTOCOL.
    self.legacy = legacy
    self.storages: dict[str, Storage] = {}

  def save_global_ref(self, obj):
    self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

  dispatch[_G] = save_global_ref

  def persistent_id(self, obj):
    view = None
    if isinstance(obj, StorageView):
      assert self.legacy, "storage views only exist in the legacy format"
      obj, view = obj.root, (obj.key, obj.offset, obj.size)
    if not isinstance(obj, Storage):
      return None
    self.storages.setdefault(obj.key, obj)
    pid = ("storage", _G("torch", obj.type_name), obj.key, obj.location, obj.numel)
    return pid + (view,) if self.legacy else pid


def pickle_bytes(obj, legacy=False):
  buf = io.BytesIO()
  pickler = _TorchLikePickler(buf, legacy)
  pickler.dump(obj)
  return buf.getvalue(), pickler.storages


def write_zip(path, obj, folder="archive", byteorder="little", skip_records=()):
  data, storages = pickle_bytes(obj)
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr(f"{folder}/data.pkl", data)
    z.writestr(f"{folder}/byteorder", byteorder)
    for key, storage in storages.items():
      if key not in skip_records:
        z.writestr(f"{folder}/data/{key}", storage.data)
    z.writestr(f"{folder}/version", "3\n")
  return path


def write_legacy(path, obj, main_pickle: bytes | None = None):
  data, storages = pickle_bytes(obj, legacy=True)
  with open(path, "wb") as f:
    pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
    pickle.dump(1001, f, protocol=2)
    pickle.dump(
      {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 8}}, f, protocol=2
    )
    f.write(main_pickle if main_pickle is not None else data)
    pickle.dump(list(storages), f, protocol=2)
    for storage in storages.values():
      f.write(struct.pack("<q", storage.values.size))
      f.write(storage.data)
  return path


WRITERS = {"zip": write_zip, "legacy": write_legacy}


def arange_storage(key="0", n=24, type_name="FloatStorage", dtype=np.float32, **kw):
  return Storage(key, np.arange(n).astype(dtype), type_name, **kw)
