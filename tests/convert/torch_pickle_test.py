"""Specification of the torch-free checkpoint reader `jaxgeal.convert.torch_pickle.load`.

torch is not available here: test checkpoints are written by tests/convert/torch_writers.py, laid out as
torch/serialization.py does. The memory bounds are specified in torch_storage_test.py.
"""

from __future__ import annotations

import argparse
import collections
import pickle
import types
import zipfile

import numpy as np
import pytest

from jaxgeal.convert import torch_pickle
from jaxgeal.convert.torch_pickle import CheckpointFormatError, UnsafeCheckpointError
from tests import fixtures
from tests.convert.torch_writers import (
  WRITERS,
  Call,
  Storage,
  StorageView,
  Tensor,
  arange_storage,
  contiguous,
  pickle_bytes,
  write_legacy,
  write_zip,
)

# --------------------------------------------------------------------------------------------------------
# Parity with the upstream fixture checkpoints.


def _fixture_checkpoints():
  root = fixtures.fixture_root()
  paths = sorted(root.rglob("*.pt")) if root.is_dir() else []
  if not paths:
    return [pytest.param(None, id="absent", marks=pytest.mark.skip(reason=f"no *.pt under {root}"))]
  return [pytest.param(p, id=str(p.relative_to(root))) for p in paths]


def _listed_checkpoints():
  """(fixture, file name, json entry) for every `checkpoints` entry with a `keys` listing, all jsons."""
  root = fixtures.fixture_root()
  params = []
  for json_path in sorted(root.rglob("*.json")) if root.is_dir() else []:
    fx = fixtures.Fixture(json_path, root)
    for name, entry in (fx.meta.get("checkpoints") or {}).items():
      if isinstance(entry, dict) and "keys" in entry:
        params.append(pytest.param(fx, entry.get("file", name), entry["keys"], id=f"{fx.id}:{name}"))
  return params or [
    pytest.param(None, None, None, id="absent", marks=pytest.mark.skip(reason=f"no checkpoint listings under {root}"))
  ]


def _is_leaf(entry) -> bool:
  return isinstance(entry, dict) and "shape" in entry and "dtype" in entry and not isinstance(entry["shape"], dict)


def _check_listing(loaded, listing, where: str):
  assert isinstance(loaded, dict), f"{where}: expected a dict, got {type(loaded).__name__}"
  assert set(loaded) == set(listing), (
    f"{where}: missing {sorted(set(listing) - set(loaded))[:5]}, unexpected {sorted(set(loaded) - set(listing))[:5]}"
  )
  for key, entry in listing.items():
    if _is_leaf(entry):
      value = loaded[key]
      assert isinstance(value, np.ndarray), f"{where}/{key}: {type(value).__name__}, not an array"
      assert value.shape == tuple(entry["shape"]), f"{where}/{key}: shape {value.shape} != {entry['shape']}"
      assert str(value.dtype) == entry["dtype"], f"{where}/{key}: dtype {value.dtype} != {entry['dtype']}"
      assert value.flags.c_contiguous
    else:
      _check_listing(loaded[key], entry, f"{where}/{key}")


@pytest.mark.parity
@pytest.mark.parametrize("path", _fixture_checkpoints())
def test_every_fixture_checkpoint_loads_to_dicts_of_arrays(path):
  loaded = torch_pickle.load(path)
  arrays = []
  stack = [loaded]
  while stack:
    node = stack.pop()
    if isinstance(node, dict):
      stack.extend(node.values())
    else:
      arrays.append(node)
  assert isinstance(loaded, dict) and arrays
  assert all(isinstance(a, np.ndarray) and a.flags.c_contiguous and a.flags.writeable for a in arrays)
  assert all(np.isfinite(a).all() for a in arrays if a.dtype.kind == "f")


@pytest.mark.parity
@pytest.mark.parametrize("fx,filename,listing", _listed_checkpoints())
def test_fixture_checkpoints_hold_every_listed_key_with_its_shape_and_dtype(fx, filename, listing):
  loaded = torch_pickle.load(fx.resolve(filename))
  if not set(listing) <= set(loaded):
    # Some jsons list a wrapped state dict flat (stylegan2_g.pt is {'g_ema': state_dict}, its listing is
    # the state dict): the listing then describes the one top-level value that holds its keys.
    holders = [v for v in loaded.values() if isinstance(v, dict) and set(listing) <= set(v)]
    assert len(holders) == 1, f"{filename}: top-level keys {list(loaded)} do not hold the listed keys"
    loaded = holders[0]
  _check_listing(loaded, listing, filename)


@pytest.mark.parity
@pytest.mark.parametrize(
  "path", [p for p in _fixture_checkpoints() if p.values[0] is None or p.values[0].name == "lpips_vgg_v0.1.pt"]
)
def test_lpips_v01_weights_legacy_cuda_file_reads_as_host_arrays(path):
  if path is None:
    pytest.skip("fixtures absent")
  assert not path.read_bytes().startswith(b"PK"), "expected the legacy (non-zip) format"
  loaded = torch_pickle.load(path)
  assert list(loaded) == [f"lin{k}.model.1.weight" for k in range(5)]
  for key, w in loaded.items():
    assert w.dtype == np.float32 and w.ndim == 4 and w.shape[0] == 1 and w.shape[2:] == (1, 1), key
    assert np.isfinite(w).all() and np.abs(w).max() > 0, key


# --------------------------------------------------------------------------------------------------------
# Refusing code execution.

PAYLOADS = {
  "os.system": lambda marker: Call("os", "system", f"touch {marker}"),
  "builtins.eval": lambda marker: Call("builtins", "eval", f"open({str(marker)!r}, 'w').close()"),
  "subprocess.Popen": lambda marker: Call("subprocess", "Popen", ["touch", str(marker)]),
}


@pytest.mark.parametrize("fmt", WRITERS)
@pytest.mark.parametrize("global_name", PAYLOADS)
def test_code_execution_globals_are_refused_and_never_run(tmp_path, fmt, global_name):
  marker = tmp_path / "pwned"
  weight = contiguous(arange_storage(), (4, 6))
  path = WRITERS[fmt](tmp_path / "evil.pt", {"weight": weight, "evil": PAYLOADS[global_name](marker)})
  with pytest.raises(UnsafeCheckpointError) as err:
    torch_pickle.load(path)
  assert f"'{global_name}'" in str(err.value) and str(path) in str(err.value)
  assert not marker.exists()


def test_the_malicious_payload_is_live_under_a_plain_unpickler(tmp_path):
  # Control for the test above: the same bytes do run code when nothing restricts the globals.
  marker = tmp_path / "pwned"
  data, _ = pickle_bytes(PAYLOADS["builtins.eval"](marker))
  pickle.loads(data)
  assert marker.exists()


def test_model_classes_are_refused_with_their_name(tmp_path):
  path = write_zip(tmp_path / "module.pt", {"t": Call("models.stylegan2.networks", "Generator", 256, 512)})
  with pytest.raises(UnsafeCheckpointError, match="models.stylegan2.networks.Generator"):
    torch_pickle.load(path)


def test_the_allow_listed_rebuild_functions_cannot_be_tampered_with(tmp_path):
  # pickle's BUILD on an allow-listed global (here: setting its __defaults__) is refused as a format error.
  data = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x0c\x00\x00\x00__defaults__Nsb."
  path = tmp_path / "tamper.pt"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", data)
  with pytest.raises(CheckpointFormatError, match="BUILD"):
    torch_pickle.load(path)


# --------------------------------------------------------------------------------------------------------
# Files that are not (whole) checkpoints.


def test_a_missing_file_raises_file_not_found_naming_it(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.pt"):
    torch_pickle.load(tmp_path / "nope.pt")


@pytest.mark.parametrize(
  "content",
  [
    pytest.param(np.random.default_rng(0).bytes(4096), id="random-bytes"),
    pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), id="png"),
    pytest.param(b"lr: 0.001\nbatch: 5\n", id="text"),
    pytest.param(b"", id="empty"),
    pytest.param(pickle.dumps({"weight": [1.0, 2.0]}, protocol=2), id="plain-pickle-without-magic"),
  ],
)
def test_non_checkpoint_files_raise_format_error_naming_the_file(tmp_path, content):
  path = tmp_path / "notackpt.pt"
  path.write_bytes(content)
  with pytest.raises(CheckpointFormatError, match="notackpt.pt"):
    torch_pickle.load(path)


def test_a_zip_without_data_pkl_is_not_a_checkpoint(tmp_path):
  path = tmp_path / "other.zip"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/weights.npy", b"\x93NUMPY")
  with pytest.raises(CheckpointFormatError, match=r"other.zip.*data\.pkl"):
    torch_pickle.load(path)


def test_a_zip_missing_a_storage_record_names_the_record(tmp_path):
  path = write_zip(tmp_path / "partial.pt", {"w": contiguous(arange_storage("7"), (24,))}, skip_records=("7",))
  with pytest.raises(CheckpointFormatError, match=r"partial.pt.*missing storage record 'archive/data/7'"):
    torch_pickle.load(path)


@pytest.mark.parametrize("fmt", WRITERS)
@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9, 0.999])
def test_truncated_crafted_checkpoints_are_format_errors(tmp_path, fmt, fraction):
  full = WRITERS[fmt](
    tmp_path / "full.pt",
    {"a": contiguous(arange_storage("0", 300), (300,)), "b": contiguous(arange_storage("1", 300), (10, 30))},
  )
  data = full.read_bytes()
  cut = tmp_path / "cut.pt"
  cut.write_bytes(data[: int(len(data) * fraction)])
  with pytest.raises(CheckpointFormatError, match="cut.pt"):
    torch_pickle.load(cut)


@pytest.mark.parity
@pytest.mark.parametrize("path", _fixture_checkpoints())
def test_the_first_half_of_a_fixture_checkpoint_is_a_format_error(tmp_path, path):
  if path is None:
    pytest.skip("fixtures absent")
  data = path.read_bytes()
  cut = tmp_path / f"half_{path.name}"
  cut.write_bytes(data[: len(data) // 2])
  with pytest.raises(CheckpointFormatError, match=f"half_{path.name}"):
    torch_pickle.load(cut)


# --------------------------------------------------------------------------------------------------------
# Tensor layout: strides, offsets, dtypes, shared storages.


@pytest.mark.parametrize("fmt", WRITERS)
def test_transposed_views_with_storage_offsets_read_back_their_values(tmp_path, fmt):
  storage = arange_storage(n=40)
  flat = storage.values
  tensors = {
    "transposed": Tensor(storage, 2, (3, 4), (1, 3)),  # (4, 3) block at offset 2, transposed.
    "sliced_rows": Tensor(storage, 5, (2, 3), (10, 2)),  # every other column of rows 5.. and 15..
    "expanded": Tensor(storage, 7, (3, 2), (0, 1)),  # stride 0 (torch's expand).
    "scalar": Tensor(storage, 39, (), ()),
    "empty": Tensor(storage, 0, (0, 5), (5, 1)),
    "whole": contiguous(storage, (5, 8)),
  }
  loaded = torch_pickle.load(WRITERS[fmt](tmp_path / "views.pt", tensors))
  expected = {
    "transposed": flat[2:14].reshape(4, 3).T,
    "sliced_rows": np.stack([flat[5:11:2], flat[15:21:2]]),
    "expanded": np.broadcast_to(flat[7:9], (3, 2)),
    "scalar": np.array(flat[39]),
    "empty": np.zeros((0, 5), np.float32),
    "whole": flat.reshape(5, 8),
  }
  for name, want in expected.items():
    got = loaded[name]
    assert got.dtype == np.float32 and got.shape == want.shape, name
    np.testing.assert_array_equal(got, want, err_msg=name)
    assert got.flags.c_contiguous and got.flags.writeable and got.flags.owndata, name
  loaded["whole"][0, 0] = -1  # Tensors sharing a storage come back as independent copies.
  assert loaded["transposed"][0, 0] == 2


@pytest.mark.parametrize("fmt", WRITERS)
@pytest.mark.parametrize(
  "type_name,dtype",
  [
    ("HalfStorage", np.float16),
    ("LongStorage", np.int64),
    ("DoubleStorage", np.float64),
    ("IntStorage", np.int32),
    ("ByteStorage", np.uint8),
    ("CharStorage", np.int8),
    ("BoolStorage", np.bool_),
  ],
)
def test_storage_types_read_back_with_their_dtype(tmp_path, fmt, type_name, dtype):
  values = np.arange(-6, 6) * 1.25 if dtype in (np.float16, np.float64) else np.arange(-6, 6) % 7 * 3
  values = np.asarray(values).astype(dtype)
  if dtype == np.int64:
    values[0] = 2**62 + 3  # Beyond float precision: read as integers, not via a float.
  loaded = torch_pickle.load(
    WRITERS[fmt](tmp_path / "t.pt", {"x": Tensor(Storage("s", values, type_name), 1, (2, 5), (1, 2))})
  )
  assert loaded["x"].dtype == dtype
  np.testing.assert_array_equal(loaded["x"], values[1:11].reshape(5, 2).T)


def test_bfloat16_storages_read_back_as_ml_dtypes_bfloat16(tmp_path):
  ml_dtypes = pytest.importorskip("ml_dtypes")
  values = np.array([1.0, -2.5, 3.0e10, 0.1], ml_dtypes.bfloat16)
  loaded = torch_pickle.load(
    write_zip(tmp_path / "bf.pt", {"x": contiguous(Storage("0", values, "BFloat16Storage"), (2, 2))})
  )
  assert loaded["x"].dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(loaded["x"].astype(np.float32), values.astype(np.float32).reshape(2, 2))


def test_untyped_storages_take_the_dtype_of_rebuild_tensor_v3(tmp_path):
  values = np.arange(10, dtype=np.float16) / 4
  storage = Storage("0", values, "UntypedStorage")  # numel counts bytes.
  path = write_zip(tmp_path / "v3.pt", {"x": Tensor(storage, 2, (2, 3), (3, 1), dtype="float16")})
  loaded = torch_pickle.load(path)
  assert loaded["x"].dtype == np.float16
  np.testing.assert_array_equal(loaded["x"], values[2:8].reshape(2, 3))


def test_big_endian_zip_checkpoints_come_back_in_native_order(tmp_path):
  storage = arange_storage(n=6, byteorder=">")
  loaded = torch_pickle.load(write_zip(tmp_path / "be.pt", {"x": contiguous(storage, (2, 3))}, byteorder="big"))
  assert loaded["x"].dtype == np.dtype("float32") and loaded["x"].dtype.isnative
  np.testing.assert_array_equal(loaded["x"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_legacy_storage_views_are_honoured(tmp_path):
  # Legacy persistent ids can name a view (view_key, offset, size) into a root storage.
  view = StorageView(arange_storage("root", 20), "view", offset=5, size=12)
  loaded = torch_pickle.load(write_legacy(tmp_path / "views.pt", {"x": Tensor(view, 1, (2, 3), (1, 2))}))
  np.testing.assert_array_equal(loaded["x"], np.arange(20, dtype=np.float32)[5:17][1:7].reshape(3, 2).T)


@pytest.mark.parametrize("fmt", WRITERS)
def test_training_checkpoint_objects_map_to_plain_python(tmp_path, fmt):
  weight = contiguous(arange_storage(n=6), (2, 3))
  args = argparse.Namespace(
    exp_name="cats", transform=["similarity", "flow"], stn_lr=1e-3, flips=False, seed=np.int64(0), psi=np.float32(0.5)
  )
  ckpt = {
    "t_ema": collections.OrderedDict(
      [("w", weight), ("p", Call("torch._utils", "_rebuild_parameter", weight, True, collections.OrderedDict()))]
    ),
    "args": args,
    "shape": Call("torch", "Size", (2, 3)),
    "device": Call("torch", "device", "cuda", 0),
    "meta": (1, 2.5, "x", b"\x00\xffraw", b"", bytearray(b"ba"), None, True, [1, {"k": 1 + 2j}], {3, 4}),
  }
  loaded = torch_pickle.load(WRITERS[fmt](tmp_path / "train.pt", ckpt))
  assert isinstance(loaded["t_ema"], collections.OrderedDict) and list(loaded["t_ema"]) == ["w", "p"]
  np.testing.assert_array_equal(loaded["t_ema"]["p"], np.arange(6, dtype=np.float32).reshape(2, 3))
  assert isinstance(loaded["args"], types.SimpleNamespace) and vars(loaded["args"]) == vars(args)
  assert loaded["shape"] == (2, 3) and type(loaded["shape"]) is tuple
  assert loaded["device"] == "cuda:0"
  assert loaded["meta"] == ckpt["meta"]


@pytest.mark.parametrize("fmt", WRITERS)
def test_storages_tagged_cuda_are_read_to_host_memory(tmp_path, fmt):
  storage = arange_storage(n=6, location="cuda:0")
  loaded = torch_pickle.load(WRITERS[fmt](tmp_path / "gpu.pt", {"x": contiguous(storage, (3, 2))}))
  np.testing.assert_array_equal(loaded["x"], np.arange(6, dtype=np.float32).reshape(3, 2))


def test_the_archive_folder_name_is_free(tmp_path):
  path = write_zip(tmp_path / "x.pt", {"w": contiguous(arange_storage(n=4), (4,))}, folder="0150000")
  np.testing.assert_array_equal(torch_pickle.load(path)["w"], np.arange(4, dtype=np.float32))
