"""What every converter key-map test checks: a full upstream state dict (built from shapes) against our model's
variables (from jax.eval_shape), through the converter's own KeyMap."""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxgeal.convert import state_dict as sdc


def flat_shapes(tree) -> dict:
  """{path tuple: shape} of a variables tree (or of its eval_shape)."""
  return {tuple(k.key for k in kp): tuple(leaf.shape) for kp, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def check_key_map(keymap: sdc.KeyMap, upstream: dict, ours: dict, is_buffer: Callable[[str], bool]):
  """Every upstream key maps (the buffers we rebuild, as `is_buffer` names them, to None), key -> path -> key is
  the identity, the layouts turn each upstream shape into ours and back, and the mapped paths are exactly our
  variables (nothing left over on either side)."""
  mapped = {}
  for key, shape in upstream.items():
    path, layout = keymap.path(key)
    if path is None:
      assert layout is sdc.BUFFER and is_buffer(key), key
      continue
    assert layout is not sdc.BUFFER, key
    assert keymap.key(path) == key
    assert path not in mapped, f"{key} and {mapped.get(path)} map to the same path {path}"
    mapped[path] = key
    assert path in ours, f"{key} -> {path}, which the model does not have"
    ours_shape = jax.eval_shape(layout.to_ours, jax.ShapeDtypeStruct(shape, jnp.float32)).shape
    assert ours_shape == ours[path], f"{key}: {shape} -> {ours_shape}, model has {ours[path]}"
    assert jax.eval_shape(layout.to_upstream, jax.ShapeDtypeStruct(ours_shape, jnp.float32)).shape == shape
  assert set(mapped) == set(ours), f"model variables without an upstream key: {sorted(set(ours) - set(mapped))}"
