"""GANgealing converters: STNs (t / t_ema), the cluster classifier, whole checkpoints and the CLI.

Architecture is read from the shapes (checked against each `stn` fixture's constructor record), unknown /
missing / misshapen keys are refused by name, lone similarity and flow STNs convert on their own, the cluster
classifier round-trips (no fixture records one: its state dict is assembled from the fixture's similarity
trunk, as upstream initialises it, plus a random `to_logits`), and `python -m jaxgeal.convert gangealing`
writes every network of a training checkpoint, reading the inject index from its pickled flags.
"""

from __future__ import annotations

import argparse
import collections
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal import checkpoint
from jaxgeal.convert import __main__ as convert_cli
from jaxgeal.convert import gangealing
from jaxgeal.convert import state_dict as sdc
from jaxgeal.models import cluster_classifier as cc
from jaxgeal.models import stn as stn_lib
from jaxgeal.ops.bias_act import fused_leaky_relu
from tests import fixtures
from tests.convert import torch_pickle_test as tp
from tests.fixtures import assert_close


def _ckpt(fx):
  return fixtures.load_checkpoint(fx, fx.checkpoint_file())


def _strip(sd, prefix):
  return collections.OrderedDict((k[len(prefix) :], v) for k, v in sd.items() if k.startswith(prefix))


def _tree_equal(a, b) -> bool:
  la, ta = jax.tree_util.tree_flatten(a)
  lb, tb = jax.tree_util.tree_flatten(b)
  return ta == tb and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("stn"))
def test_stn_architecture_is_read_from_the_checkpoint_shapes(fx):
  config, variables = gangealing.convert_stn(_ckpt(fx)["t_ema"])
  ctor = fx.meta["constructor"]["t_ema"]
  kw = fixtures.call_kwargs(ctor["call"])
  transforms = re.search(r"get_stn\(\[([^\]]*)\]", ctor["call"]).group(1)
  assert config["transforms"] == [t.strip(" '\"") for t in transforms.split(",")]
  assert (config["flow_size"], config["supersize"], config["num_heads"]) == (
    kw["flow_size"],
    kw["supersize"],
    kw["num_heads"],
  )
  assert {str(r): c for r, c in config["channels"]} == ctor["effective_channels"]
  assert config["flow_downsample"] == int(re.search(r"flow_downsample (\d+)", ctor["note"]).group(1))
  assert set(variables["params"]) == {"stns_0", "stns_1"}
  # The config is JSON-able and round-trips through the module.
  assert stn_lib.config_of(stn_lib.from_config(config)) == config


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("stn"))
def test_lone_stns_convert_on_their_own(fx):
  sd = _ckpt(fx)["t_ema"]
  _, full = gangealing.convert_stn(sd)
  sim_config, sim = gangealing.convert_stn(_strip(sd, "stns.0."))
  assert sim_config["transforms"] == ["similarity"]
  assert _tree_equal(sim["params"], full["params"]["stns_0"])
  flow_sd = _strip(sd, "stns.1.")
  with pytest.raises(sdc.ConversionError, match="pass flow_size"):
    gangealing.convert_stn(flow_sd)
  flow_config, flow = gangealing.convert_stn(flow_sd, flow_size=sim_config["flow_size"])
  assert flow_config["transforms"] == ["flow"] and flow_config["supersize"] == sim_config["supersize"]
  assert _tree_equal(flow["params"], full["params"]["stns_1"])
  with pytest.raises(sdc.ConversionError, match="not the flow_size"):
    gangealing.convert_stn(sd, flow_size=2 * sim_config["flow_size"])
  # supersize is a test-time choice (upstream ignores the downsampler's buffers on load).
  assert gangealing.convert_stn(sd, supersize=256)[0]["supersize"] == 256


def _edits(sd):
  unknown = dict(sd, **{"stns.0.warp_head.extra": np.zeros(3, np.float32)})
  missing = {k: v for k, v in sd.items() if k != "stns.1.warp_head.mask_out.0.bias"}
  misshapen = dict(sd, **{"stns.1.warp_head.mask_out.2.bias": np.zeros(5, np.float32)})
  return [
    (unknown, r"not understood.*stns\.0\.warp_head\.extra"),
    (missing, r"missing key.*mask_out\.0\.bias"),
    (misshapen, r"mask_out\.2"),
  ]


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("stn")[:1])
def test_stn_converter_refuses_unknown_missing_and_misshapen_keys(fx):
  for sd, match in _edits(dict(_ckpt(fx)["t_ema"])):
    with pytest.raises(sdc.ConversionError, match=match):
      gangealing.convert_stn(sd)


def _classifier_sd(fx, num_classes: int):
  """An upstream-layout classifier state dict: the similarity trunk of t_ema plus a random `to_logits`."""
  sim = _strip(_ckpt(fx)["t_ema"], "stns.0.")
  sd = collections.OrderedDict((k, v) for k, v in sim.items() if not k.startswith(("final_linear", "warp_head")))
  c4 = sim["final_conv.0.weight"].shape[0]
  rng = np.random.default_rng(0)
  sd["to_logits.weight"] = rng.standard_normal((num_classes, c4 * 16)).astype(np.float32)
  sd["to_logits.bias"] = rng.standard_normal(num_classes).astype(np.float32)
  return sd


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("stn"))
def test_cluster_classifier_conversion_round_trip(fx):
  stn_config, stn_vars = gangealing.convert_stn(_ckpt(fx)["t_ema"])
  num_classes = 2 * stn_config["num_heads"]  # K clusters x (no flip, flip).
  sd = _classifier_sd(fx, num_classes)
  config, variables = gangealing.convert_classifier(sd)
  assert config == {
    "size": stn_config["flow_size"],
    "supersize": stn_config["supersize"],
    "channels": stn_config["channels"],
    "num_classes": num_classes,
  }
  # Same trunk as the similarity STN it was initialised from (upstream: load_state_dict(strict=False)).
  params = variables["params"]
  assert _tree_equal(cc.init_from_stn(params, stn_vars["params"]), params)
  # Logits: upstream flattens the 4x4 features in (C, H, W) order before to_logits (fused lrelu).
  clf = cc.from_config(config)
  s = config["supersize"]
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, s, s, 3), minval=-1.0, maxval=1.0)
  logits, state = jax.jit(lambda v, x: clf.apply(v, x, capture_intermediates=True))(variables, x)
  feats = np.asarray(state["intermediates"]["final_conv"]["__call__"][0])
  flat = feats.transpose(0, 3, 1, 2).reshape(2, -1)
  w = sd["to_logits.weight"]
  expected = fused_leaky_relu(jnp.asarray(flat @ w.T / math.sqrt(w.shape[1])), jnp.asarray(sd["to_logits.bias"]))
  assert_close(logits, expected, 1e-4, "classifier logits")
  bad = dict(sd, **{"to_logits.extra": np.zeros(1, np.float32)})
  with pytest.raises(sdc.ConversionError, match="not understood"):
    gangealing.convert_classifier(bad)


def _tensors(sd, prefix):
  """State dict -> torch-like tensors for the torch-free test writer."""
  out = collections.OrderedDict()
  for i, (k, v) in enumerate(sd.items()):
    v = np.ascontiguousarray(np.asarray(v, np.float32))
    out[k] = tp.contiguous(tp.Storage(f"{prefix}{i}", v), v.shape)
  return out


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("stn"))
def test_cli_converts_a_training_checkpoint(fx, tmp_path, capsys):
  ckpt = _ckpt(fx)
  ll_inject = fixtures.call_kwargs(fx.meta["constructor"]["ll"]["call"])["inject_index"]
  flow_size = fixtures.call_kwargs(fx.meta["constructor"]["t_ema"]["call"])["flow_size"]
  train = {
    "g_ema": _tensors(ckpt["g_ema"], "g"),
    "t": _tensors(ckpt["t_ema"], "t"),
    "t_ema": _tensors(ckpt["t_ema"], "e"),
    "ll": _tensors(ckpt["ll"], "l"),
    "classifier": _tensors(_classifier_sd(fx, 4), "c"),
    "t_optim": {"state": {}, "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999)}]},
    "args": argparse.Namespace(inject=ll_inject, flow_size=flow_size, num_heads=1, flips=True),
  }
  src = tp.write_zip(tmp_path / "0150000.pt", train)
  out = tmp_path / "model"
  assert convert_cli.main(["gangealing", str(src), str(out)]) == 0
  assert "t_ema: stn" in capsys.readouterr().out
  models = checkpoint.load_models(out)
  assert {n: m[0] for n, m in models.items()} == {
    "g_ema": "generator",
    "t": "stn",
    "t_ema": "stn",
    "ll": "latent_learner",
    "classifier": "cluster_classifier",
  }
  n_latent = 2 * int(math.log2(models["g_ema"][1]["size"])) - 2
  assert (models["ll"][1]["inject_index"], models["ll"][1]["n_latent"]) == (ll_inject, n_latent)
  _, t_ema = gangealing.convert_stn(ckpt["t_ema"])
  assert _tree_equal(models["t_ema"][2]["params"], t_ema["params"])
  assert models["t_ema"][1] == gangealing.convert_stn(ckpt["t_ema"])[0]
  # Without training flags the inject index comes from --inject (upstream's default is 5).
  converted = gangealing.convert_gangealing_checkpoint(ckpt)
  assert converted["ll"][1]["inject_index"] == 5 and set(converted) == {"g_ema", "t_ema", "ll"}
  src = str(fx.resolve(fx.checkpoint_file()))
  assert convert_cli.main(["gangealing", src, str(tmp_path / "m2"), "--inject", "2"]) == 0
  assert checkpoint.load_model(tmp_path / "m2", "ll")[1]["inject_index"] == 2
  # Entries it does not know are refused by name.
  with pytest.raises(sdc.ConversionError, match="not understood.*'extra'"):
    gangealing.convert_gangealing_checkpoint(dict(ckpt, extra={}))
