"""StyleGAN2 trainer's path-length penalty: as upstream (rosinality train.py's g_path_regularize with
create_graph=True through the latents the generator returned), its gradient flows through the W+ latents into
the mapping network. Checked against central finite differences in float64 on a tiny generator, every random
draw (z, mixing crossover, per-layer noise, the projection y) fixed by one key."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxgeal.models import stylegan2
from jaxgeal.trainers import stylegan2 as trainer

EPS = 1e-6


def _tiny_float64_generator():
  G = stylegan2.Generator(size=8, style_dim=4, n_mlp=2, channels=((4, 4), (8, 4)))
  v = G.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)), randomize_noise=False)
  # Nudge every parameter off its initial value (noise weights and biases start at 0) so each one matters.
  leaves, tree = jax.tree_util.tree_flatten(v["params"])
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree_util.tree_unflatten(
    tree, [x.astype(jnp.float64) + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  )
  noises = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), v["noises"])
  return G, params, noises


def test_path_length_gradient_reaches_the_mapping_network_and_matches_finite_differences():
  with jax.enable_x64(True):
    G, params, noises = _tiny_float64_generator()
    key = jax.random.PRNGKey(2)  # z, the crossover (mixing 0.9), per-layer noise and y all come from it
    penalty = jax.jit(lambda p: trainer.path_length_penalty(G, p, noises, key, 3, jnp.float64(0.3), 0.9)[0])
    grads = jax.jit(jax.grad(penalty))(params)
    assert grads["style_1"]["weight"].dtype == jnp.float64

    for name in ("style_1", "style_2"):  # the mapping MLP
      assert float(jnp.abs(grads[name]["weight"]).max()) > 1e-3, name
    probes = [
      ("style_1", "weight", (0, 1)),
      ("style_1", "bias", (2,)),
      ("style_2", "weight", (3, 0)),
      ("conv1", "conv", "weight", (1, 2, 0, 3)),
      ("convs_1", "noise", "weight", (0,)),
      ("to_rgbs_0", "conv", "modulation", "weight", (2, 1)),
    ]
    for *path, index in probes:

      def shifted(delta, path=path, index=index):
        def at(tree, depth=0):
          if depth == len(path):
            return tree.at[index].add(delta)
          return {**tree, path[depth]: at(tree[path[depth]], depth + 1)}

        return at(params)

      numeric = (float(penalty(shifted(EPS))) - float(penalty(shifted(-EPS)))) / (2 * EPS)
      analytic = grads
      for p in path:
        analytic = analytic[p]
      analytic = float(analytic[index])
      np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-9, err_msg="/".join(path))
