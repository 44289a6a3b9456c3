"""Convert the GANgealing-specific parts of a checkpoint (Peebles et al. 2022, §3) to jaxgeal variables.

A GANgealing training checkpoint holds `g_ema` (see `jaxgeal.convert.stylegan2`), the STN `t` / `t_ema` and
the latent learner `ll`. Each converter here takes one state dict and returns (config, variables); keys or
shapes it does not understand are refused (upstream loads some of these with strict=False).

`ll` (models/latent_learner.py::DirectionInterpolator): `coefficients` [K, ndirs] (the learned alphas of
eq. 4, one row per cluster), buffers `directions` [ndirs, D] (PCA components) and `lat_mean` [1, D].
`inject_index` and `n_latent` are constructor arguments, not tensors: upstream keeps them in the pickled
training `args` (`--inject`) and the generator, so the caller passes them.

Each network's upstream keys are paired with our parameter paths and layouts by one `state_dict.KeyMap`:
`LATENT_LEARNER_KEYS`, `stn_keys(config)` and `classifier_keys(config)` (built from the architecture, since the
number of ResBlocks and stages varies). The converters read the architecture from the shapes, then place every
tensor through the map; parity tests map recorded upstream gradients back through the same maps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np

from jaxgeal.convert import state_dict as sdc

# Upstream models/latent_learner.py::DirectionInterpolator (wpeebles/gangealing, commit
# ffa6387c7ffd3f7de76bdc693dc2272e274e9bfd): the learned alphas and the two PCA buffers, all stored as they are.
LATENT_LEARNER_KEYS = sdc.KeyMap(
  "GANgealing latent learner (ll)",
  [
    ("coefficients", "params/coefficients", sdc.MATRIX),
    ("directions", "pca/directions", sdc.MATRIX),
    ("lat_mean", "pca/lat_mean", sdc.MATRIX),
  ],
)


def convert_latent_learner(
  sd: Mapping[str, np.ndarray], *, inject_index: int | None = None, n_latent: int | None = None
) -> tuple[dict, dict]:
  """`ll` state dict -> (config, variables) for `jaxgeal.models.latent_learner.from_config`.

  config: {num_heads, ndirs, style_dim} plus inject_index / n_latent when given.
  variables: {'params': {'coefficients'}, 'pca': {'directions', 'lat_mean'}}.
  """
  r = sdc.StateDictReader(sd, "GANgealing latent learner (ll)")
  num_heads, ndirs = _shape(r, "coefficients", 2)
  n_directions, style_dim = _shape(r, "directions", 2)
  if n_directions != ndirs:
    raise sdc.ConversionError(
      f"ll: coefficients {(num_heads, ndirs)} and directions {(n_directions, style_dim)} "
      "disagree on the number of directions"
    )
  config = {"num_heads": int(num_heads), "ndirs": int(ndirs), "style_dim": int(style_dim)}
  if inject_index is not None:
    config["inject_index"] = int(inject_index)
  if n_latent is not None:
    config["n_latent"] = int(n_latent)
  # The variables' shapes follow from the config alone (LatentLearner's setup).
  shape = lambda *s: jax.ShapeDtypeStruct(s, np.float32)
  expected = {
    "params": {"coefficients": shape(num_heads, ndirs)},
    "pca": {"directions": shape(ndirs, style_dim), "lat_mean": shape(1, style_dim)},
  }
  return config, LATENT_LEARNER_KEYS.convert(r, expected)


# -- spatial transformers (t, t_ema) and the cluster classifier ------------------------------------------------


def _shape(r: sdc.StateDictReader, key: str, ndim: int | None = None) -> tuple[int, ...]:
  """Shape of `key`, read without taking the tensor; absent keys and wrong ranks are refused by name."""
  if not r.has(key) or (ndim is not None and r.sd[key].ndim != ndim):
    r.take(key, ndim)  # Raises the reader's error, naming the key.
  return tuple(int(d) for d in r.sd[key].shape)


def trunk_downsampling(transform: str, size: int, flow_downsample: int = 8) -> list[bool]:
  """Whether each ResBlock (convs[1:]) of a trunk at `size` halves its input, as upstream builds them
  (`jaxgeal.models.stn.make_trunk`): one halving block per level down to 4x4 for a similarity STN or the cluster
  classifier; four blocks for a flow STN, of which the first log2(flow_downsample) halve."""
  log_size, log_down = int(math.log2(size)), int(math.log2(flow_downsample))
  if transform == "flow":
    return [j < log_down for j in range(4)]
  return [True] * (log_size - 2)


def _trunk_rules(prefix: str, path: str, downsampling: Sequence[bool]) -> list:
  """convs (ConvLayer from RGB, then ResBlocks) + final_conv under key `prefix` / path `path`.

  A ConvLayer is a Sequential ([Blur] when downsampling, EqualConv2d, [FusedLeakyReLU]), so its indices shift by
  one in the halving ResBlocks; a ResBlock's skip has neither bias nor activation. upstream
  models/stylegan2/networks.py::ConvLayer, ResBlock (wpeebles/gangealing, ffa6387c7ffd3f7de76bdc693dc2272e274e9bfd).
  """
  rules = [
    (f"{prefix}convs.0.0.weight", f"{path}convs_0/conv/weight", sdc.CONV),
    (f"{prefix}convs.0.1.bias", f"{path}convs_0/activate/bias", sdc.VECTOR),
  ]
  for j, down in enumerate(downsampling, 1):
    key, sub, o = f"{prefix}convs.{j}.", f"{path}convs_{j}/", int(down)
    rules += [
      (f"{key}conv1.0.weight", f"{sub}conv1/conv/weight", sdc.CONV),
      (f"{key}conv1.1.bias", f"{sub}conv1/activate/bias", sdc.VECTOR),
      (f"{key}conv2.{o}.weight", f"{sub}conv2/conv/weight", sdc.CONV),
      (f"{key}conv2.{o + 1}.bias", f"{sub}conv2/activate/bias", sdc.VECTOR),
      (f"{key}skip.{o}.weight", f"{sub}skip/conv/weight", sdc.CONV),
    ]
    if down:
      rules += [(f"{key}conv2.0.kernel", None, sdc.BUFFER), (f"{key}skip.0.kernel", None, sdc.BUFFER)]
  rules += [
    (f"{prefix}final_conv.0.weight", f"{path}final_conv/conv/weight", sdc.CONV),
    (f"{prefix}final_conv.1.bias", f"{path}final_conv/activate/bias", sdc.VECTOR),
    # BilinearDownsample's tent kernels, present when supersize > size (upstream ignores them on load).
    (f"{prefix}input_downsample.kernel_horz", None, sdc.BUFFER),
    (f"{prefix}input_downsample.kernel_vert", None, sdc.BUFFER),
  ]
  return rules


def _stn_rules(transform: str, flow_size: int, flow_downsample: int, prefix: str, path: str) -> list:
  """One SpatialTransformer (spatial_transformer.py, warping_heads.py, antialiased_sampling.py)."""
  rules = _trunk_rules(prefix, path, trunk_downsampling(transform, flow_size, flow_downsample))
  head, sub = f"{prefix}warp_head.", f"{path}warp_head/"
  # MipmapWarp's blur filter; `rebias` is a buffer of older checkpoints that upstream drops on load.
  rules += [(f"{head}warper.blur_filter", None, sdc.BUFFER), (f"{head}rebias", None, sdc.BUFFER)]
  if transform == "similarity":
    # final_linear reads the 4x4 features flattened (C, H, W); warp_head.linear is a plain nn.Linear (Flax Dense).
    rules += [
      (f"{prefix}final_linear.weight", f"{path}final_linear/weight", sdc.DENSE_CHW4),
      (f"{prefix}final_linear.bias", f"{path}final_linear/bias", sdc.VECTOR),
      (f"{head}linear.weight", f"{sub}linear/kernel", sdc.DENSE),
      (f"{head}linear.bias", f"{sub}linear/bias", sdc.VECTOR),
      (f"{head}one_hot", None, sdc.BUFFER),
    ]
  else:
    # flow_out / mask_out are Sequential(EqualConv2d, ReLU, EqualConv2d): indices 0 and 2.
    for name in ("flow_out.0", "flow_out.2", "mask_out.0", "mask_out.2"):
      ours = name.replace(".", "_")
      rules += [
        (f"{head}{name}.weight", f"{sub}{ours}/weight", sdc.CONV),
        (f"{head}{name}.bias", f"{sub}{ours}/bias", sdc.VECTOR),
      ]
  return rules


def stn_keys(config: Mapping) -> sdc.KeyMap:
  """Upstream `t` / `t_ema` keys <-> our STN params for an STN config (`jaxgeal.models.stn.config_of`, or the
  converter's): `stns.{i}.` prefixes for a ComposedSTN (several transforms), none for one SpatialTransformer.
  The names depend on transforms, flow_size and flow_downsample only (the widths and K change shapes)."""
  transforms = list(config["transforms"])
  fs, fd = int(config["flow_size"]), int(config.get("flow_downsample") or 8)
  if len(transforms) == 1:
    rules = _stn_rules(transforms[0], fs, fd, "", "params/")
  else:
    rules = [
      rule for i, t in enumerate(transforms) for rule in _stn_rules(t, fs, fd, f"stns.{i}.", f"params/stns_{i}/")
    ]
  return sdc.KeyMap(f"GANgealing STN {transforms}", rules)


def classifier_keys(config: Mapping) -> sdc.KeyMap:
  """Upstream `classifier` (models/cluster_classifier.py::ResnetClassifier) keys <-> our params for a classifier
  config: the similarity STN's trunk, then `to_logits` (EqualLinear over (C, H, W)-flattened 4x4 features)."""
  rules = _trunk_rules("", "params/", trunk_downsampling("similarity", int(config["size"])))
  rules += [
    ("to_logits.weight", "params/to_logits/weight", sdc.DENSE_CHW4),
    ("to_logits.bias", "params/to_logits/bias", sdc.VECTOR),
  ]
  return sdc.KeyMap("GANgealing cluster classifier", rules)


def _merge_channels(table: dict, res: int, width: int, what: str):
  if table.setdefault(int(res), int(width)) != int(width):
    raise sdc.ConversionError(
      f"{what}: resolution {res} has width {table[res]} in one layer and {width} in "
      "another; upstream builds every layer from one channel table"
    )


def _supersize(r: sdc.StateDictReader, prefix: str, flow_size: int) -> int | None:
  """supersize from the tent kernel of `input_downsample` (length 2 * stride), None when absent."""
  key = f"{prefix}input_downsample.kernel_horz"
  if not r.has(key):
    return None
  return flow_size * (int(r.sd[key].shape[-1]) // 2)


def _trunk(r: sdc.StateDictReader, prefix: str, what: str) -> tuple[list[bool], dict, int]:
  """The trunk's architecture: the downsample flag of each ResBlock, the output width of convs[j] keyed by j
  (upstream reads it at resolution size / 2**j) and final_conv's width (that of resolution 4)."""
  n = sdc.count_indexed(r, f"{prefix}convs")
  if n < 2:
    raise sdc.ConversionError(f"{what}: expected `{prefix}convs.0` ... ResBlocks, found {n} conv entries")
  widths = {0: _shape(r, f"{prefix}convs.0.0.weight", 4)[0]}
  downs = []
  for j in range(1, n):
    down = r.has(f"{prefix}convs.{j}.conv2.0.kernel")
    downs.append(down)
    widths[j] = _shape(r, f"{prefix}convs.{j}.conv2.{int(down)}.weight", 4)[0]
  return downs, widths, _shape(r, f"{prefix}final_conv.0.weight", 4)[0]


def _stn_config(r: sdc.StateDictReader, prefix: str, flow_size: int | None) -> dict:
  """The architecture of one SpatialTransformer under `prefix`, read from its shapes (partial config)."""
  what = f"GANgealing STN ({prefix or 'single'})"
  downs, widths, c4 = _trunk(r, prefix, what)
  if r.has(f"{prefix}warp_head.linear.weight"):
    transform, flow_downsample = "similarity", None
    if not all(downs):
      raise sdc.ConversionError(f"{what}: a similarity STN downsamples in every ResBlock")
    flow_size = 4 * 2 ** len(downs)  # Its trunk halves the input down to 4x4 (final_linear reads 4*4*C).
    outputs = _shape(r, f"{prefix}warp_head.linear.weight", 2)[0]
    if outputs % 4:
      raise sdc.ConversionError(f"{what}: warp_head.linear has {outputs} outputs, not 4 per head")
    num_heads = outputs // 4
  elif r.has(f"{prefix}warp_head.flow_out.0.weight"):
    transform = "flow"
    num_heads = _shape(r, f"{prefix}warp_head.flow_out.2.weight", 4)[0] // 2
    mask = _shape(r, f"{prefix}warp_head.mask_out.2.weight", 4)[0]
    flow_downsample = int(round(math.sqrt(mask // (9 * max(num_heads, 1)))))
    if (
      num_heads < 1
      or flow_downsample & (flow_downsample - 1)
      or flow_downsample**2 * 9 * num_heads != mask
      or downs != trunk_downsampling("flow", 16, flow_downsample)
    ):
      raise sdc.ConversionError(
        f"{what}: mask_out.2 ({mask} channels), {num_heads} heads and the ResBlocks' "
        f"downsampling {downs} do not form a flow STN (4 ResBlocks, the first "
        "log2(flow_downsample) downsampling)"
      )
    if flow_size is None:
      raise sdc.ConversionError(
        f"{what}: a lone flow STN does not store flow_size in its weights; pass flow_size (upstream --flow_size)"
      )
  else:
    raise sdc.ConversionError(
      f"{what}: no warp head (`{prefix}warp_head.linear.weight` or `{prefix}warp_head.flow_out.0.weight`)"
    )
  table = {}
  for j, width in widths.items():
    _merge_channels(table, flow_size // 2**j, width, what)
  _merge_channels(table, 4, c4, what)
  return {
    "transform": transform,
    "flow_size": flow_size,
    "supersize": _supersize(r, prefix, flow_size),
    "channels": table,
    "num_heads": int(num_heads),
    "flow_downsample": flow_downsample,
  }


def _expected_variables(module, size: int) -> dict:
  """The variables tree (shapes only) that `module` builds for (1, size, size, 3) inputs."""
  return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jax.numpy.zeros((1, size, size, 3))))


def convert_stn(
  sd: Mapping[str, np.ndarray], *, flow_size: int | None = None, supersize: int | None = None
) -> tuple[dict, dict]:
  """`t` / `t_ema` state dict (ComposedSTN with `stns.i.` prefixes, or one SpatialTransformer) -> (config,
  variables) for `jaxgeal.models.stn.from_config`.

  Architecture (transforms, K heads, channel widths, flow_downsample, flow_size) is read from the shapes:
  flow_size from the similarity trunk (its ResBlocks halve down to 4x4); a lone flow STN needs `flow_size`.
  supersize comes from the `input_downsample` tent kernels (flow_size when absent); pass `supersize` to
  run on inputs of another size (upstream ignores those buffers on load for that reason). The tensors are then
  placed by `stn_keys(config)`, which refuses unknown, missing and misshapen keys by name.
  """
  from jaxgeal.models import stn as stn_lib

  r = sdc.StateDictReader(sd, "GANgealing STN")
  n_stages = sdc.count_indexed(r, "stns")
  cfgs = []
  for prefix in [f"stns.{i}." for i in range(n_stages)] if n_stages else [""]:
    cfgs.append(_stn_config(r, prefix, cfgs[0]["flow_size"] if cfgs else flow_size))
  if flow_size is not None and cfgs[0]["flow_size"] != flow_size:
    raise sdc.ConversionError(
      f"GANgealing STN: its similarity trunk regresses at {cfgs[0]['flow_size']}, not the flow_size {flow_size} given"
    )
  table = {}
  for c in cfgs:
    for res, width in c["channels"].items():
      _merge_channels(table, res, width, "GANgealing STN")
  for key in ("flow_size", "num_heads"):
    if len({c[key] for c in cfgs}) != 1:
      raise sdc.ConversionError(f"GANgealing STN: stages disagree on {key}: {[c[key] for c in cfgs]}")
  stored = {c["supersize"] for c in cfgs} - {None}
  if len(stored) > 1:
    raise sdc.ConversionError(f"GANgealing STN: stages disagree on supersize: {sorted(stored)}")
  fs = cfgs[0]["flow_size"]
  flow_downsample = next((c["flow_downsample"] for c in cfgs if c["flow_downsample"]), 8)
  module = stn_lib.build_stn(
    [c["transform"] for c in cfgs],
    flow_size=fs,
    supersize=int(supersize or (stored.pop() if stored else fs)),
    channels=[[res, table[res]] for res in sorted(table)],
    num_heads=cfgs[0]["num_heads"],
    flow_downsample=flow_downsample,
  )
  config = stn_lib.config_of(module)  # Upstream's blur kernel and antialiasing are the modules' defaults.
  expected = _expected_variables(module, fs)
  return config, stn_keys(config).convert(r, expected)


def convert_classifier(sd: Mapping[str, np.ndarray], *, supersize: int | None = None) -> tuple[dict, dict]:
  """`classifier` state dict (upstream ResnetClassifier) -> (config, variables) for
  `jaxgeal.models.cluster_classifier.from_config`; num_classes = K * (1 + flips) read from `to_logits`."""
  from jaxgeal.models import cluster_classifier

  what = "GANgealing cluster classifier"
  r = sdc.StateDictReader(sd, what)
  downs, widths, c4 = _trunk(r, "", what)
  if not all(downs):
    raise sdc.ConversionError(f"{what}: every ResBlock must downsample")
  size = 4 * 2 ** len(downs)
  table = {}
  for j, width in widths.items():
    _merge_channels(table, size // 2**j, width, what)
  _merge_channels(table, 4, c4, what)
  config = {
    "size": size,
    "supersize": int(supersize or _supersize(r, "", size) or size),
    "channels": [[res, table[res]] for res in sorted(table)],
    "num_classes": _shape(r, "to_logits.weight", 2)[0],
  }
  expected = _expected_variables(cluster_classifier.from_config(config), size)
  return config, classifier_keys(config).convert(r, expected)


# Entries of a training checkpoint that hold optimiser / scheduler state or the pickled flags, not networks.
_TRAINING_STATE = ("t_optim", "t_sched", "ll_optim", "ll_sched", "cls_optim", "cls_sched", "args")


def convert_gangealing_checkpoint(ckpt: Mapping, *, inject_index: int = 5, flow_size: int | None = None) -> dict:
  """A GANgealing (or cluster-classifier) checkpoint -> {name: (kind, config, variables)}.

  Networks: g_ema ("generator"), t and t_ema ("stn"), ll ("latent_learner"), classifier
  ("cluster_classifier"), whichever are present. The latent learner's inject index comes from the pickled
  training flags (`args.inject`) when the checkpoint has them, else from `inject_index` (upstream's --inject
  default is 5); n_latent is the generator's. Optimiser / scheduler states are not converted.
  """
  from jaxgeal.convert import stylegan2 as convert_g

  if not isinstance(ckpt, Mapping) or not any(k in ckpt for k in ("t_ema", "t", "ll", "classifier")):
    keys = sorted(ckpt)[:10] if isinstance(ckpt, Mapping) else type(ckpt).__name__
    raise sdc.ConversionError(f"not a GANgealing checkpoint: expected keys t_ema / t / ll / classifier, found {keys}")
  unknown = sorted(set(ckpt) - {"g_ema", "t", "t_ema", "ll", "classifier", *_TRAINING_STATE})
  if unknown:
    raise sdc.ConversionError(f"GANgealing checkpoint: entries not understood: {unknown}")
  args = ckpt.get("args")
  inject_index = int(getattr(args, "inject", inject_index))
  flow_size = getattr(args, "flow_size", None) if flow_size is None else flow_size
  out = {}
  n_latent = None
  if "g_ema" in ckpt:
    out["g_ema"] = ("generator",) + convert_g.convert_generator(ckpt["g_ema"])
    n_latent = 2 * int(math.log2(out["g_ema"][1]["size"])) - 2
  for name in ("t", "t_ema"):
    if name in ckpt:
      out[name] = ("stn",) + convert_stn(ckpt[name], flow_size=flow_size)
  if "ll" in ckpt:
    out["ll"] = ("latent_learner",) + convert_latent_learner(ckpt["ll"], inject_index=inject_index, n_latent=n_latent)
  if "classifier" in ckpt:
    out["classifier"] = ("cluster_classifier",) + convert_classifier(ckpt["classifier"])
  return out
