"""The GANgealing key maps (`stn_keys`, `classifier_keys`, `LATENT_LEARNER_KEYS`) on full upstream state dicts.

Upstream state dicts are written here from shapes alone, following the module definitions of
wpeebles/gangealing (commit ffa6387c7ffd3f7de76bdc693dc2272e274e9bfd): models/spatial_transformers/
spatial_transformer.py (SpatialTransformer, ComposedSTN), warping_heads.py (SimilarityHead, FlowHead),
antialiased_sampling.py (MipmapWarp, BilinearDownsample), models/cluster_classifier.py (ResnetClassifier),
models/latent_learner.py (DirectionInterpolator) and models/stylegan2/networks.py (ConvLayer, ResBlock).
For each architecture (similarity, flow and composed STNs, 1 and several heads, the fixtures' sizes and the
paper's flow_size 128 / supersize 256): every key maps, key -> path -> key is the identity, the layouts turn
each upstream shape into that of `jax.eval_shape` of our init, and no variable of ours is left without a key.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal.convert import gangealing
from jaxgeal.models import cluster_classifier as cc
from jaxgeal.models import latent_learner as ll_lib
from jaxgeal.models import stn as stn_lib
from tests import fixtures
from tests.convert.keymaps import check_key_map, flat_shapes

BUFFERS = ("kernel", "kernel_horz", "kernel_vert", "blur_filter", "one_hot", "rebias")


def _upstream_channels(channel_multiplier: float, override: dict | None = None) -> dict:
  """SpatialTransformer's / ResnetClassifier's local `channels` dict (the fixtures replace some entries)."""
  ch = {
    4: 512,
    8: 512,
    16: 512,
    32: 512,
    64: 256 * channel_multiplier,
    128: 128 * channel_multiplier,
    256: 64 * channel_multiplier,
    512: 32 * channel_multiplier,
    1024: 16 * channel_multiplier,
  }
  ch.update(override or {})
  return {r: int(c) for r, c in ch.items()}


def _conv_layer(sd, key, cin, cout, k, downsample=False, bias=True, activate=True):
  """ConvLayer = Sequential([Blur], EqualConv2d (bias only when not activated), [FusedLeakyReLU])."""
  i = 0
  if downsample:
    sd[f"{key}.0.kernel"] = (4, 4)
    i = 1
  sd[f"{key}.{i}.weight"] = (cout, cin, k, k)
  if bias and not activate:
    sd[f"{key}.{i}.bias"] = (cout,)
  if activate and bias:
    sd[f"{key}.{i + 1}.bias"] = (cout,)


def _input_downsample(sd, prefix, supersize, size):
  stride = supersize // size
  sd[f"{prefix}input_downsample.kernel_horz"] = (3, 1, 1, 2 * stride)
  sd[f"{prefix}input_downsample.kernel_vert"] = (3, 1, 2 * stride, 1)


def _trunk(sd, prefix, ch, size, is_flow, flow_downsample):
  """convs + final_conv; returns the last ResBlock's width (the flow head's in_shape[1])."""
  _conv_layer(sd, f"{prefix}convs.0", 3, ch[size], 1)
  log_size, log_down = int(math.log2(size)), int(math.log2(flow_downsample))
  in_ch, n_down = ch[size], 0
  for j, i in enumerate(range(log_size, log_size - 4 if is_flow else 2, -1), 1):
    down = (not is_flow) or n_down < log_down
    n_down += down
    out_ch = ch[2 ** (i - 1)]
    _conv_layer(sd, f"{prefix}convs.{j}.conv1", in_ch, in_ch, 3)
    _conv_layer(sd, f"{prefix}convs.{j}.conv2", in_ch, out_ch, 3, downsample=down)
    _conv_layer(sd, f"{prefix}convs.{j}.skip", in_ch, out_ch, 1, downsample=down, activate=False, bias=False)
    in_ch = out_ch
  _conv_layer(sd, f"{prefix}final_conv", in_ch, ch[4], 3)
  return in_ch


def _upstream_stn(sd, prefix, transform, flow_size, supersize, ch, num_heads, flow_downsample):
  """SpatialTransformer(flow_size, supersize, ..., num_heads, transform, flow_downsample) under `prefix`."""
  if supersize > flow_size:
    _input_downsample(sd, prefix, supersize, flow_size)
  in_ch = _trunk(sd, prefix, ch, flow_size, transform == "flow", flow_downsample)
  head = f"{prefix}warp_head."
  if transform == "similarity":
    sd[f"{prefix}final_linear.weight"] = (ch[4], ch[4] * 16)
    sd[f"{prefix}final_linear.bias"] = (ch[4],)
    sd[f"{head}one_hot"] = (1, 1, 1, 3)
    sd[f"{head}linear.weight"] = (4 * num_heads, ch[4])
    sd[f"{head}linear.bias"] = (4 * num_heads,)
  else:
    outs = {"flow_out": 2 * num_heads, "mask_out": 9 * flow_downsample**2 * num_heads}
    for name, out in outs.items():
      sd[f"{head}{name}.0.weight"], sd[f"{head}{name}.0.bias"] = (in_ch, in_ch, 3, 3), (in_ch,)
      sd[f"{head}{name}.2.weight"], sd[f"{head}{name}.2.bias"] = (out, in_ch, 3, 3), (out,)
  sd[f"{head}warper.blur_filter"] = (1, 1, 4, 4)


def _is_buffer(key: str) -> bool:
  """Buffers we rebuild instead of converting (blur kernels, one-hot tables...)."""
  return key.rsplit(".", 1)[-1] in BUFFERS


def upstream_stn_shapes(transforms, flow_size, supersize, ch, num_heads=1, flow_downsample=8) -> dict:
  """{key: shape} of `get_stn(transforms, ...).state_dict()`."""
  sd = {}
  if len(transforms) == 1:
    _upstream_stn(sd, "", transforms[0], flow_size, supersize, ch, num_heads, flow_downsample)
  for i, t in enumerate(transforms if len(transforms) > 1 else []):
    _upstream_stn(sd, f"stns.{i}.", t, flow_size, supersize, ch, num_heads, flow_downsample)
  return sd


def _our_stn_shapes(transforms, flow_size, supersize, num_heads, flow_downsample, **channels) -> dict:
  stn = stn_lib.build_stn(
    transforms,
    flow_size=flow_size,
    supersize=supersize,
    num_heads=num_heads,
    flow_downsample=flow_downsample,
    **channels,
  )
  return flat_shapes(jax.eval_shape(lambda: stn.init(jax.random.PRNGKey(0), jnp.zeros((1, flow_size, flow_size, 3)))))


def _config(transforms, flow_size, flow_downsample=8):
  return {"transforms": list(transforms), "flow_size": flow_size, "flow_downsample": flow_downsample}


TRANSFORMS = [["similarity"], ["flow"], ["similarity", "flow"]]


# The paper's STNs (flow_size 128, supersize 256) at both channel multipliers, K = 1 and K = 4; our default
# channel table stands in for upstream's.
@pytest.mark.parametrize("transforms", TRANSFORMS, ids="+".join)
@pytest.mark.parametrize("channel_multiplier", [0.5, 1])
@pytest.mark.parametrize("num_heads", [1, 4])
def test_every_key_of_a_paper_size_stn_maps(transforms, channel_multiplier, num_heads):
  upstream = upstream_stn_shapes(transforms, 128, 256, _upstream_channels(channel_multiplier), num_heads)
  ours = _our_stn_shapes(transforms, 128, 256, num_heads, 8, channel_multiplier=channel_multiplier)
  check_key_map(gangealing.stn_keys(_config(transforms, 128)), upstream, ours, _is_buffer)


# Other flow sizes, supersizes (equal to flow_size: no input_downsample buffers), flow_downsample and K.
@pytest.mark.parametrize("transforms", TRANSFORMS, ids="+".join)
@pytest.mark.parametrize(
  "flow_size,supersize,num_heads,flow_downsample", [(64, 64, 3, 8), (256, 512, 2, 8), (128, 128, 1, 4), (64, 256, 5, 2)]
)
def test_every_key_of_an_stn_of_other_sizes_maps(transforms, flow_size, supersize, num_heads, flow_downsample):
  ch = _upstream_channels(0.5, {r: 16 for r in (4, 8, 16, 32)})
  upstream = upstream_stn_shapes(transforms, flow_size, supersize, ch, num_heads, flow_downsample)
  ours = _our_stn_shapes(
    transforms,
    flow_size,
    supersize,
    num_heads,
    flow_downsample,
    channels=tuple((r, c) for r, c in ch.items() if r <= flow_size),
  )
  check_key_map(
    gangealing.stn_keys(_config(transforms, flow_size, flow_downsample)),
    upstream,
    ours,
    _is_buffer,
  )


def _fixture_architecture(fx):
  ctor = fx.meta["constructor"]["t_ema"]
  kw = fixtures.call_kwargs(ctor["call"])
  transforms = [t.strip(" '\"") for t in re.search(r"get_stn\(\[([^\]]*)\]", ctor["call"]).group(1).split(",")]
  flow_downsample = int(re.search(r"flow_downsample (\d+)", ctor["note"]).group(1))
  channels = {int(r): int(c) for r, c in ctor["effective_channels"].items()}
  return transforms, kw, flow_downsample, channels


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("stn"))
def test_every_key_of_the_fixture_stns_architecture_maps(fx):
  """The architectures stn.json records, written from its constructor call, and the recorded state dict."""
  transforms, kw, fd, channels = _fixture_architecture(fx)
  upstream = upstream_stn_shapes(transforms, kw["flow_size"], kw["supersize"], channels, kw["num_heads"], fd)
  ours = _our_stn_shapes(
    transforms, kw["flow_size"], kw["supersize"], kw["num_heads"], fd, channels=tuple(channels.items())
  )
  keymap = gangealing.stn_keys(_config(transforms, kw["flow_size"], fd))
  check_key_map(keymap, upstream, ours, _is_buffer)
  recorded = fixtures.load_checkpoint(fx, fx.checkpoint_file())["t_ema"]
  assert {k: tuple(v.shape) for k, v in recorded.items()} == upstream


@pytest.mark.parametrize(
  "transforms,flow_size,supersize,num_heads,flow_downsample",
  [(["similarity", "flow"], 64, 128, 3, 8), (["similarity"], 32, 32, 2, 8), (["flow"], 64, 64, 1, 4)],
)
def test_the_converter_reads_the_architecture_and_places_every_key_through_the_map(
  transforms, flow_size, supersize, num_heads, flow_downsample
):
  ch = _upstream_channels(0.125, {r: 8 for r in (4, 8, 16, 32)})
  shapes = upstream_stn_shapes(transforms, flow_size, supersize, ch, num_heads, flow_downsample)
  rng = np.random.default_rng(0)
  sd = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
  config, variables = gangealing.convert_stn(sd, flow_size=flow_size if transforms == ["flow"] else None)
  assert (config["transforms"], config["flow_size"], config["supersize"], config["num_heads"]) == (
    transforms,
    flow_size,
    supersize,
    num_heads,
  )
  assert config["channels"] == [[r, c] for r, c in sorted(ch.items()) if r <= flow_size]
  if "flow" in transforms:
    assert config["flow_downsample"] == flow_downsample
  keymap = gangealing.stn_keys(config)
  for key, value in sd.items():
    if keymap.path(key)[0] is not None:
      np.testing.assert_array_equal(keymap.upstream_value(key, variables), value, err_msg=key)


def test_stn_key_maps_refuse_names_they_do_not_know():
  composed = gangealing.stn_keys(_config(["similarity", "flow"], 64))
  for bad in (
    "stns.2.convs.0.0.weight",
    "stns.1.warp_head.linear.weight",
    "stns.0.warp_head.flow_out.0.weight",
    "stns.0.convs.5.conv1.0.weight",
    "stns.1.convs.4.conv2.1.weight",
    "stns.01.final_conv.0.weight",
    "convs.0.0.weight",
    "stns.1.final_linear.weight",
  ):
    with pytest.raises(KeyError, match="no parameter"):
      composed.path(bad)
  with pytest.raises(KeyError, match="no upstream key"):
    composed.key(("params", "stns_0", "warp_head", "flow_out_0", "weight"))
  with pytest.raises(KeyError, match="no parameter"):
    gangealing.stn_keys(_config(["similarity"], 64)).path("stns.0.convs.0.0.weight")
  with pytest.raises(KeyError, match="constant buffer"):
    composed.upstream_value("stns.0.warp_head.one_hot", {})


def upstream_classifier_shapes(size, ch, num_classes, supersize=None) -> dict:
  """{key: shape} of `ResnetClassifier(size, channel_multiplier, num_heads=num_classes, supersize)`."""
  sd = {}
  if supersize is not None:
    _input_downsample(sd, "", supersize, size)
  _trunk(sd, "", ch, size, False, 8)
  sd["to_logits.weight"], sd["to_logits.bias"] = (num_classes, ch[4] * 16), (num_classes,)
  return sd


@pytest.mark.parametrize("size,supersize,num_classes", [(128, 256, 2), (64, None, 6)])
@pytest.mark.parametrize("channel_multiplier", [0.5, 1])
def test_every_key_of_a_cluster_classifier_maps(size, supersize, num_classes, channel_multiplier):
  upstream = upstream_classifier_shapes(size, _upstream_channels(channel_multiplier), num_classes, supersize)
  clf = cc.ResnetClassifier(
    size=size, num_classes=num_classes, supersize=supersize, channel_multiplier=channel_multiplier
  )
  ours = jax.eval_shape(lambda: clf.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))
  check_key_map(
    gangealing.classifier_keys({"size": size}),
    upstream,
    flat_shapes(ours),
    _is_buffer,
  )


def test_every_key_of_a_latent_learner_maps():
  """DirectionInterpolator: coefficients (K, ndirs) and the PCA buffers directions (ndirs, D), lat_mean (1, D)."""
  upstream = {"coefficients": (3, 2), "directions": (2, 16), "lat_mean": (1, 16)}
  ll = ll_lib.LatentLearner(num_heads=3, ndirs=2, style_dim=16, inject_index=2, n_latent=4)
  ours = jax.eval_shape(lambda: ll.init(jax.random.PRNGKey(0), method=ll.targets))
  check_key_map(gangealing.LATENT_LEARNER_KEYS, upstream, flat_shapes(ours), _is_buffer)
