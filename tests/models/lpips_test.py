"""LPIPS / vgg_ssl perceptual distances (jaxgeal.models.lpips) against GANgealing's PyTorch module.

The parity test replays every call recorded in each `lpips.json` (the root fixtures and `multihead/`): the
model variant, options and inputs are read from the recorded call strings, the weights come from the
checkpoints the json names, converted with our torch-free converter. Observed max abs errors (CPU, float32;
the bound is 1e-4): distances and per-layer terms <= 6e-8 (values up to 0.6), spatial maps <= 2.7e-7, the
normalize=True path <= 1.2e-8, VGG feature maps <= 1.8e-6 (values up to 2.5).
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal.convert import lpips as convert
from jaxgeal.convert import torch_pickle
from jaxgeal.models import lpips
from tests import fixtures
from tests.fixtures import assert_close, nchw_to_nhwc

ATOL = 1e-4


@functools.cache
def _state_dict(path: str):
  return torch_pickle.load(path)


@functools.cache
def _apply(lpips_variant: bool, normalize: bool, spatial: bool, features: bool = False):
  module = lpips.LPIPS(lpips=lpips_variant)
  if features:
    return jax.jit(lambda v, x: module.apply(v, x, method=lpips.LPIPS.features))
  return jax.jit(lambda v, x, y: module.apply(v, x, y, normalize=normalize, spatial=spatial, ret_per_layer=not spatial))


def _split_call(call: str) -> tuple[str, str]:
  """'LPIPS(ctor)(args)' -> (ctor, args), matching parentheses (args may contain '(x+1)/2')."""
  assert call.startswith("LPIPS("), call
  depth = 0
  for end in range(5, len(call)):
    depth += {"(": 1, ")": -1}.get(call[end], 0)
    if depth == 0:
      break
  rest = call[end + 1 :]
  assert rest.startswith("(") and rest.endswith(")"), call
  return call[6:end], rest[1:-1]


def _flags(text: str) -> dict[str, bool]:
  return {k: v == "True" for k, v in re.findall(r"(\w+)\s*=\s*(True|False)", text)}


def _quoted(text: str, name: str) -> str | None:
  m = re.search(name + r'\s*=\s*"([^"]+)"', text)
  return m.group(1) if m else None


def _inputs(fx, args: str) -> list[np.ndarray]:
  """The recorded input arrays named in a call's arguments, as NHWC; '(x+1)/2' is applied where written."""
  out = []
  for arg in args.split(","):
    names = [n for n in re.findall(r"[A-Za-z_]\w*", arg) if fx.meta["arrays"].get(n, {}).get("kind") == "input"]
    if len(names) != 1:
      continue
    x = nchw_to_nhwc(fx[names[0]])
    if re.fullmatch(r"\s*\(\s*\w+\s*\+\s*1\s*\)\s*/\s*2\s*", arg):
      x = (x + 1) / 2
    out.append(x)
  return out


def _variables(fx, lpips_variant: bool, ctor: str):
  """Converted variables for a call: vgg_ssl loads `pretrained_weights`; LPIPS loads `model_path` for the
  heads and (the json's note: torchvision's stubbed ImageNet VGG16) the other checkpoint for the trunk."""
  files = [c["file"] for c in fx.meta["checkpoints"].values()]
  lin_files = [f for f in files if all(k.startswith("lin") for k in fx.meta["checkpoints"][f]["keys"])]
  vgg_files = [f for f in files if f not in lin_files]
  vgg_file = _quoted(ctor, "pretrained_weights") or (vgg_files[0] if len(vgg_files) == 1 else None)
  assert vgg_file, f"{fx.id}: cannot tell which checkpoint holds the VGG trunk ({files})"
  lin_path = None
  if lpips_variant:
    lin_file = _quoted(ctor, "model_path") or (lin_files[0] if len(lin_files) == 1 else None)
    assert lin_file, f"{fx.id}: cannot tell which checkpoint holds the LPIPS heads ({files})"
    lin_path = str(fx.resolve(lin_file))
  return _converted(str(fx.resolve(vgg_file)), lin_path)


@functools.cache
def _converted(vgg_path: str, lin_path: str | None):
  lin = _state_dict(lin_path) if lin_path else None
  _, config, variables = convert.convert(_state_dict(vgg_path), lin)
  assert config["lpips"] == (lin is not None)
  return jax.tree_util.tree_map(jnp.asarray, variables)  # On the device once, not per call.


def _replay(fx, call: dict) -> dict[str, float]:
  """Runs one recorded call and compares its outputs; returns {output: observed max abs error}."""
  text, outputs = call["call"], call["outputs"]
  errors = {}
  if text.startswith("LPIPS.net(LPIPS.scaling_layer("):
    (x,) = _inputs(fx, text)
    feats = _apply(True, False, False, features=True)(_variables(fx, True, ""), x)
    assert len(outputs) == len(lpips.LAYER_NAMES)
    for name, layer, f in zip(outputs, lpips.LAYER_NAMES, feats):
      assert layer in name, f"{name} is not the {layer} map"
      errors[name] = assert_close(f, nchw_to_nhwc(fx[name]), ATOL, f"{fx.id}/{name}")
    return errors

  ctor, args = _split_call(text)
  ctor_flags, call_flags = _flags(ctor), _flags(args)
  lpips_variant = ctor_flags.get("lpips", True)  # 'LPIPS(...)' is the default (LPIPS v0.1) model.
  spatial = ctor_flags.get("spatial", False)
  normalize = call_flags.get("normalize", False)
  x, y = _inputs(fx, args)
  out = _apply(lpips_variant, normalize, spatial)(_variables(fx, lpips_variant, ctor), x, y)
  if spatial:
    (name,) = outputs
    errors[name] = assert_close(out, nchw_to_nhwc(fx[name]), ATOL, f"{fx.id}/{name}")
    return errors
  total, per_layer = out
  name = outputs[0]
  errors[name] = assert_close(total, fx[name].reshape(-1), ATOL, f"{fx.id}/{name}")
  if call_flags.get("retPerLayer"):
    layers_name = outputs[1]
    ref = fx[layers_name].reshape(len(lpips.LAYER_NAMES), -1)
    # README quirk: upstream's entry 0 *is* the total (in-place `val += res[l]`); layer 0 is the remainder.
    errors[layers_name + "[0]=total"] = assert_close(total, ref[0], ATOL, f"{fx.id}/{layers_name}[0]")
    errors[layers_name + "[1:]"] = assert_close(per_layer[1:], ref[1:], ATOL, f"{fx.id}/{layers_name}[1:]")
    errors[layers_name + " layer 0"] = assert_close(
      per_layer[0], ref[0] - ref[1:].sum(0), ATOL, f"{fx.id}/{layers_name} layer 0"
    )
  return errors


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("lpips"))
def test_every_recorded_call_matches_upstream(fx):
  calls = fx.meta["calls"]
  assert calls
  errors = {}
  for call in calls:
    errors.update(_replay(fx, call))
  print(f"{fx.id}: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
  # Every recorded output was compared.
  recorded = {n for n, a in fx.meta["arrays"].items() if a["kind"] == "output"}
  compared = {k.split("[")[0].split(" ")[0] for k in errors}
  assert recorded <= compared, f"{fx.id}: outputs not replayed: {sorted(recorded - compared)}"


# -- properties that need no fixture (random VGG weights, converted like a real state dict) ---------------

SIZE = 16  # The smallest input with a non-empty relu5_3 map (four 2x2 max-pools).


@functools.cache
def _random_variables(kind: str):
  """Kaiming-normal (fan_out) trunk as torchvision initialises it, non-negative heads as LPIPS learns them."""
  rng = np.random.default_rng(0)
  vgg, in_ch = {}, 3
  for i, c in zip(lpips.CONV_INDICES, lpips.CONV_CHANNELS):
    vgg[f"{i}.weight"] = (rng.standard_normal((c, in_ch, 3, 3)) * np.sqrt(2 / (9 * c))).astype(np.float32)
    vgg[f"{i}.bias"] = (0.05 * rng.standard_normal(c)).astype(np.float32)
    in_ch = c
  lin = {
    f"lin{k}.model.1.weight": np.abs(rng.standard_normal((1, c, 1, 1))).astype(np.float32) / c
    for k, c in enumerate(lpips.CHANNELS)
  }
  _, _, variables = convert.convert(vgg, lin if kind == "lpips" else None)
  return jax.tree_util.tree_map(jnp.asarray, variables)


def _images(seed: int, n: int = 2, dtype=jnp.float32):
  return jax.random.uniform(jax.random.PRNGKey(seed), (n, SIZE, SIZE, 3), dtype, minval=-1.0, maxval=1.0)


@pytest.mark.parametrize("kind", ["lpips", "vgg_ssl"])
def test_distance_to_itself_is_zero_and_outputs_follow_the_options(kind):
  loss = lpips.make_perceptual_loss(kind, _random_variables(kind))

  @jax.jit
  def everything(loss, x, y):
    return dict(
      loss=loss(x, y),
      self=loss.distance(x, x),
      d=loss.distance(x, y),
      layers=loss.distance(x, y, ret_per_layer=True),
      spatial=loss.distance(x, y, spatial=True),
      normalized=loss.distance((x + 1) / 2, (y + 1) / 2, normalize=True),
      features=loss.features(x),
      vgg_ssl=lpips.vgg_ssl_loss(loss.variables, x, y) if kind == "vgg_ssl" else None,
    )

  out = everything(loss, _images(0), _images(1))
  d = out["d"]
  assert d.shape == (2,) and bool(jnp.all(d > 0))
  np.testing.assert_allclose(out["self"], 0.0, atol=1e-7)
  np.testing.assert_allclose(out["loss"], lpips.LOSS_SCALES[kind] * d, rtol=1e-6)
  if kind == "vgg_ssl":  # GANgealing's training loss: the channel-sum distance / 18.
    np.testing.assert_allclose(out["vgg_ssl"], d / 18, rtol=1e-6)
  total, per_layer = out["layers"]
  assert per_layer.shape == (5, 2)
  np.testing.assert_allclose(total, d, rtol=1e-6)
  np.testing.assert_allclose(per_layer.sum(0), total, rtol=1e-5)
  # The spatial map is the per-layer maps upsampled and summed; its mean is close to (not equal to) d.
  assert out["spatial"].shape == (2, SIZE, SIZE, 1) and bool(jnp.all(out["spatial"] >= 0))
  np.testing.assert_allclose(out["normalized"], d, rtol=1e-5)  # [0, 1] inputs are mapped to [-1, 1].
  s = SIZE
  assert [f.shape for f in out["features"]] == [
    (2, s, s, 64),
    (2, s // 2, s // 2, 128),
    (2, s // 4, s // 4, 256),
    (2, s // 8, s // 8, 512),
    (2, s // 16, s // 16, 512),
  ]


def test_loss_is_jittable_as_an_argument_and_differentiable():
  loss = lpips.make_perceptual_loss("lpips", _random_variables("lpips"))
  value_and_grad = jax.jit(lambda loss, x, y: jax.value_and_grad(lambda x: loss(x, y).mean())(x))
  x, y = _images(4), _images(5)
  value, grad = value_and_grad(loss, x, y)
  assert grad.shape == x.shape and bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0
  # At x == y the distance is at its minimum: zero gradient.
  assert float(jnp.abs(value_and_grad(loss, y, y)[1]).max()) < 1e-6
  # Dead ReLUs: with relu5_3 zero everywhere, a plain sqrt in the unit normalisation gives NaN gradients.
  params = jax.tree_util.tree_map(lambda a: a, loss.variables["params"])
  params["net"]["features_28"]["bias"] = jnp.full((512,), -1e4)
  dead = loss.replace(variables={"params": params})  # relu4_3 is O(1): conv 28 + bias stays below 0.
  value, grad = value_and_grad(dead, x, y)  # Same structure: no recompilation.
  assert bool(jnp.isfinite(value)) and bool(jnp.all(jnp.isfinite(grad)))


@pytest.mark.slow
def test_gradient_matches_finite_differences_in_float64():
  # VGG is piecewise linear (ReLU, max-pool), so float32 differences are too noisy; float64 converges.
  with jax.enable_x64(True):
    v = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), _random_variables("lpips"))
    module = lpips.LPIPS()
    x, y, u = (_images(seed, n=1, dtype=jnp.float64) for seed in (6, 7, 8))
    f = lambda x: module.apply(v, x, y).sum()
    eps = 1e-6

    @jax.jit
    def check(x):  # One compilation for the gradient and both evaluations.
      return jax.grad(f)(x), f(x + eps * u), f(x - eps * u)

    grad, plus, minus = check(x)
    assert grad.dtype == jnp.float64
    np.testing.assert_allclose((plus - minus) / (2 * eps), jnp.vdot(grad, u), rtol=1e-4)


def test_upsample_matches_torch_bilinear_align_corners_false():
  # F.interpolate(size=(5,), bilinear, align_corners=False) of [0, 10] along one axis (hand-computed):
  # source positions (d + .5) * 2/5 - .5 = -.3, .1, .5, .9, 1.3 -> clamped to [0, 1].
  x = jnp.asarray([0.0, 10.0]).reshape(1, 2, 1, 1)
  out = lpips.upsample_bilinear(x, (5, 1))
  np.testing.assert_allclose(out.reshape(-1), [0.0, 1.0, 5.0, 9.0, 10.0], atol=1e-6)


def test_missing_weights_name_the_file_and_the_conversion_command(tmp_path):
  for kind, source in [("lpips", "lpips_vgg_v0.1.pt"), ("vgg_ssl", "simclr_vgg_phase150.pt")]:
    with pytest.raises(FileNotFoundError) as e:
      lpips.load_perceptual_loss(kind, weights_dir=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / kind / "model.json") in msg
    assert "python -m jaxgeal.convert lpips" in msg and str(tmp_path / kind) in msg and source in msg
  with pytest.raises(ValueError, match="unknown perceptual loss"):
    lpips.load_perceptual_loss("alex", weights_dir=tmp_path)
