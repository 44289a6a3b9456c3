"""Convert the GANgealing-specific parts of a checkpoint (Peebles et al. 2022, §3) to jaxgeal variables.

A GANgealing training checkpoint holds `g_ema` (see `jaxgeal.convert.stylegan2`), the STN `t` / `t_ema` and
the latent learner `ll`. Each converter here takes one state dict and returns (config, variables); keys or
shapes it does not understand are refused (upstream loads some of these with strict=False).

`ll` (models/latent_learner.py::DirectionInterpolator): `coefficients` [K, ndirs] (the learned alphas of
eq. 4, one row per cluster), buffers `directions` [ndirs, D] (PCA components) and `lat_mean` [1, D].
`inject_index` and `n_latent` are constructor arguments, not tensors: upstream keeps them in the pickled
training `args` (`--inject`) and the generator, so the caller passes them.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from jaxgeal.convert import state_dict as sdc
from jaxgeal.models import latent_learner


def convert_latent_learner(sd: Mapping[str, np.ndarray], *, inject_index: int | None = None,
                           n_latent: int | None = None) -> tuple[dict, dict]:
  """`ll` state dict -> (config, variables) for `latent_learner.LatentLearner`.

  config: {num_heads, ndirs, style_dim} plus inject_index / n_latent when given.
  variables: {'params': {'coefficients'}, 'pca': {'directions', 'lat_mean'}}.
  """
  r = sdc.StateDictReader(sd, "GANgealing latent learner (ll)")
  coefficients = r.take("coefficients", 2)
  directions = r.take("directions", 2)
  lat_mean = r.take("lat_mean", 2)
  r.check_all_used()
  num_heads, ndirs = coefficients.shape
  if directions.shape[0] != ndirs:
    raise sdc.ConversionError(f"ll: coefficients {coefficients.shape} and directions {directions.shape} "
                              "disagree on the number of directions")
  style_dim = directions.shape[1]
  if lat_mean.shape != (1, style_dim):
    raise sdc.ConversionError(f"ll: lat_mean has shape {lat_mean.shape}, expected (1, {style_dim})")
  config = {"num_heads": int(num_heads), "ndirs": int(ndirs), "style_dim": int(style_dim)}
  if inject_index is not None:
    config["inject_index"] = int(inject_index)
  if n_latent is not None:
    config["n_latent"] = int(n_latent)
  variables = {"params": {"coefficients": coefficients},
               "pca": {"directions": directions, "lat_mean": lat_mean}}
  return config, variables


def build_latent_learner(config: Mapping, **overrides) -> latent_learner.LatentLearner:
  """The module for a converted config; inject_index and n_latent must come from config or overrides."""
  kw = {k: config[k] for k in ("num_heads", "ndirs", "style_dim", "inject_index", "n_latent") if k in config}
  kw.update(overrides)
  missing = [k for k in ("inject_index", "n_latent") if k not in kw]
  if missing:
    raise ValueError(f"build_latent_learner: {missing} are not stored in the ll state dict; pass them "
                     "(upstream: --inject, default 5, and the generator's n_latent)")
  return latent_learner.LatentLearner(**kw)


# -- spatial transformers (t, t_ema) and the cluster classifier ------------------------------------------------

# Buffers upstream rebuilds at construction (or ignores on load): blur kernels, the similarity head's one-hot
# row, MipmapWarp's blur filter, the input downsampler's tent kernels (whose length 2 * stride gives supersize).
_STN_BUFFERS = ("warp_head.one_hot", "warp_head.rebias", "warp_head.warper.blur_filter",
                "input_downsample.kernel_horz", "input_downsample.kernel_vert")


def _merge_channels(table: dict, res: int, width: int, what: str):
  if table.setdefault(int(res), int(width)) != int(width):
    raise sdc.ConversionError(f"{what}: resolution {res} has width {table[res]} in one layer and {width} in "
                              "another; upstream builds every layer from one channel table")


def _supersize(r: sdc.StateDictReader, prefix: str, flow_size: int) -> int | None:
  """supersize from the tent kernel of `input_downsample` (length 2 * stride), None when absent."""
  key = f"{prefix}input_downsample.kernel_horz"
  if not r.has(key):
    return None
  return flow_size * (int(r.sd[key].shape[-1]) // 2)


def _trunk(r: sdc.StateDictReader, prefix: str, what: str) -> tuple[dict, list[bool], dict, int]:
  """convs + final_conv params, the downsample flag of each ResBlock, the output width of convs[j] keyed by j
  (upstream reads it at resolution size / 2**j) and final_conv's width (that of resolution 4)."""
  n = sdc.count_indexed(r, f"{prefix}convs")
  if n < 2:
    raise sdc.ConversionError(f"{what}: expected `{prefix}convs.0` ... ResBlocks, found {n} conv entries")
  params = {"convs_0": sdc.conv_layer(r, f"{prefix}convs.0")}
  widths = {0: int(r.sd[f"{prefix}convs.0.0.weight"].shape[0])}
  downs = []
  for j in range(1, n):
    down = r.has(f"{prefix}convs.{j}.conv2.0.kernel")
    downs.append(down)
    params[f"convs_{j}"] = sdc.res_block(r, f"{prefix}convs.{j}", downsample=down)
    widths[j] = int(r.sd[f"{prefix}convs.{j}.conv2.{1 if down else 0}.weight"].shape[0])
  params["final_conv"] = sdc.conv_layer(r, f"{prefix}final_conv")
  final = int(r.sd[f"{prefix}final_conv.0.weight"].shape[0])
  return params, downs, widths, final


def _convert_one_stn(r: sdc.StateDictReader, prefix: str, flow_size: int | None) -> tuple[dict, dict]:
  """One SpatialTransformer under `prefix` -> (partial config, params)."""
  what = f"GANgealing STN ({prefix or 'single'})"
  params, downs, widths, c4 = _trunk(r, prefix, what)
  if r.has(f"{prefix}warp_head.linear.weight"):
    transform = "similarity"
    if not all(downs):
      raise sdc.ConversionError(f"{what}: a similarity STN downsamples in every ResBlock")
    flow_size = 4 * 2 ** len(downs)  # Its trunk halves the input down to 4x4 (final_linear reads 4*4*C).
    lin = sdc.equal_linear(r, f"{prefix}final_linear")
    lin["weight"] = sdc.dense_from_chw(r.take(f"{prefix}final_linear.weight"), c4, 4, 4)
    params["final_linear"] = lin
    head_w = r.take(f"{prefix}warp_head.linear.weight", 2)
    if head_w.shape[0] % 4:
      raise sdc.ConversionError(f"{what}: warp_head.linear has {head_w.shape[0]} outputs, not 4 per head")
    num_heads, flow_downsample = head_w.shape[0] // 4, None
    # The head is a plain nn.Linear (no equalised learning rate): Flax Dense layout.
    head_b = r.take(f"{prefix}warp_head.linear.bias", 1)
    params["warp_head"] = {"linear": {"kernel": sdc.dense(head_w), "bias": head_b}}
  elif r.has(f"{prefix}warp_head.flow_out.0.weight"):
    transform = "flow"
    head = {}
    for name in ("flow_out.0", "flow_out.2", "mask_out.0", "mask_out.2"):
      head[name.replace(".", "_")] = {"weight": sdc.conv(r.take(f"{prefix}warp_head.{name}.weight", 4)),
                                      "bias": r.take(f"{prefix}warp_head.{name}.bias", 1)}
    params["warp_head"] = head
    num_heads = head["flow_out_2"]["bias"].shape[0] // 2
    f2 = head["mask_out_2"]["bias"].shape[0] // (9 * num_heads)
    flow_downsample = int(round(math.sqrt(f2)))
    if flow_downsample ** 2 * 9 * num_heads != head["mask_out_2"]["bias"].shape[0] or \
        sum(downs) != int(math.log2(flow_downsample)) or len(downs) != 4 or any(downs[sum(downs):]):
      raise sdc.ConversionError(f"{what}: mask_out.2 ({head['mask_out_2']['bias'].shape[0]} channels), "
                                f"{num_heads} heads and the ResBlocks' downsampling {downs} do not form a "
                                "flow STN (4 ResBlocks, the first log2(flow_downsample) downsampling)")
    if flow_size is None:
      raise sdc.ConversionError(f"{what}: a lone flow STN does not store flow_size in its weights; pass "
                                "flow_size (upstream --flow_size)")
  else:
    raise sdc.ConversionError(f"{what}: no warp head (`{prefix}warp_head.linear.weight` or "
                              f"`{prefix}warp_head.flow_out.0.weight`)")
  table = {}
  for j, width in widths.items():
    _merge_channels(table, flow_size // 2 ** j, width, what)
  _merge_channels(table, 4, c4, what)
  r.skip(f"{prefix}{b}" for b in _STN_BUFFERS)
  config = {"transform": transform, "flow_size": flow_size, "supersize": _supersize(r, prefix, flow_size),
            "channels": table, "num_heads": int(num_heads), "flow_downsample": flow_downsample}
  return config, params


def _check_param_shapes(module, params: dict, x_shape: tuple, what: str):
  """Refuse converted params whose tree or shapes differ from what `module` builds (Flax checks neither)."""
  import jax
  expected = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jax.numpy.zeros(x_shape)))["params"]
  flat_e = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(expected)}
  flat_a = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}
  bad = sorted(k for k in set(flat_e) | set(flat_a) if flat_e.get(k) != flat_a.get(k))
  if bad:
    raise sdc.ConversionError(f"{what}: converted parameters do not fit the architecture read from the "
                              f"shapes: {[(k, flat_a.get(k), flat_e.get(k)) for k in bad[:5]]}")


def convert_stn(sd: Mapping[str, np.ndarray], *, flow_size: int | None = None,
                supersize: int | None = None) -> tuple[dict, dict]:
  """`t` / `t_ema` state dict (ComposedSTN with `stns.i.` prefixes, or one SpatialTransformer) -> (config,
  variables) for `jaxgeal.models.stn.from_config`.

  Architecture (transforms, K heads, channel widths, flow_downsample, flow_size) is read from the shapes:
  flow_size from the similarity trunk (its ResBlocks halve down to 4x4); a lone flow STN needs `flow_size`.
  supersize comes from the `input_downsample` tent kernels (flow_size when absent); pass `supersize` to
  run on inputs of another size (upstream ignores those buffers on load for that reason).
  """
  from jaxgeal.models import stn as stn_lib
  r = sdc.StateDictReader(sd, "GANgealing STN")
  n_stages = sdc.count_indexed(r, "stns")
  prefixes = [f"stns.{i}." for i in range(n_stages)] if n_stages else [""]
  stages = []
  for prefix in prefixes:
    stages.append(_convert_one_stn(r, prefix, stages[0][0]["flow_size"] if stages else flow_size))
  r.check_all_used()
  cfgs = [c for c, _ in stages]
  if flow_size is not None and cfgs[0]["flow_size"] != flow_size:
    raise sdc.ConversionError(f"GANgealing STN: its similarity trunk regresses at {cfgs[0]['flow_size']}, "
                              f"not the flow_size {flow_size} given")
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
  config = {"transforms": [c["transform"] for c in cfgs], "flow_size": fs,
            "supersize": int(supersize or (stored.pop() if stored else fs)),
            "channels": [[res, table[res]] for res in sorted(table)], "num_heads": cfgs[0]["num_heads"],
            "flow_downsample": flow_downsample, "blur_kernel": [1, 3, 3, 1], "antialias": True}
  params = {f"stns_{i}": p for i, (_, p) in enumerate(stages)} if n_stages else stages[0][1]
  _check_param_shapes(stn_lib.from_config(config), params, (1, fs, fs, 3), "GANgealing STN")
  return config, {"params": params}


def convert_classifier(sd: Mapping[str, np.ndarray], *, supersize: int | None = None) -> tuple[dict, dict]:
  """`classifier` state dict (upstream ResnetClassifier) -> (config, variables) for
  `jaxgeal.models.cluster_classifier.from_config`; num_classes = K * (1 + flips) read from `to_logits`."""
  from jaxgeal.models import cluster_classifier
  r = sdc.StateDictReader(sd, "GANgealing cluster classifier")
  params, downs, widths, c4 = _trunk(r, "", "GANgealing cluster classifier")
  if not all(downs):
    raise sdc.ConversionError("GANgealing cluster classifier: every ResBlock must downsample")
  size = 4 * 2 ** len(downs)
  logits = sdc.equal_linear(r, "to_logits")
  logits["weight"] = sdc.dense_from_chw(r.take("to_logits.weight"), c4, 4, 4)
  params["to_logits"] = logits
  stored = _supersize(r, "", size)
  r.skip(["input_downsample.kernel_horz", "input_downsample.kernel_vert"])
  r.check_all_used()
  table = {}
  for j, width in widths.items():
    _merge_channels(table, size // 2 ** j, width, "GANgealing cluster classifier")
  _merge_channels(table, 4, c4, "GANgealing cluster classifier")
  config = {"size": size, "supersize": int(supersize or stored or size),
            "channels": [[res, table[res]] for res in sorted(table)],
            "num_classes": int(logits["bias"].shape[0])}
  _check_param_shapes(cluster_classifier.from_config(config), params, (1, size, size, 3),
                      "GANgealing cluster classifier")
  return config, {"params": params}


# Entries of a training checkpoint that hold optimiser / scheduler state or the pickled flags, not networks.
_TRAINING_STATE = ("t_optim", "t_sched", "ll_optim", "ll_sched", "cls_optim", "cls_sched", "args")


def convert_gangealing_checkpoint(ckpt: Mapping, *, inject_index: int = 5,
                                  flow_size: int | None = None) -> dict:
  """A GANgealing (or cluster-classifier) checkpoint -> {name: (kind, config, variables)}.

  Networks: g_ema ("generator"), t and t_ema ("stn"), ll ("latent_learner"), classifier
  ("cluster_classifier"), whichever are present. The latent learner's inject index comes from the pickled
  training flags (`args.inject`) when the checkpoint has them, else from `inject_index` (upstream's --inject
  default is 5); n_latent is the generator's. Optimiser / scheduler states are not converted.
  """
  from jaxgeal.convert import stylegan2 as convert_g
  if not isinstance(ckpt, Mapping) or not any(k in ckpt for k in ("t_ema", "t", "ll", "classifier")):
    keys = sorted(ckpt)[:10] if isinstance(ckpt, Mapping) else type(ckpt).__name__
    raise sdc.ConversionError(f"not a GANgealing checkpoint: expected keys t_ema / t / ll / classifier, "
                              f"found {keys}")
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
    out["ll"] = ("latent_learner",) + convert_latent_learner(ckpt["ll"], inject_index=inject_index,
                                                             n_latent=n_latent)
  if "classifier" in ckpt:
    out["classifier"] = ("cluster_classifier",) + convert_classifier(ckpt["classifier"])
  return out
