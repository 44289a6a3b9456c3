"""2-D convolutions whose derivatives of every order run on XLA:CPU's fast convolution paths.

XLA:CPU is fast at a stride-1 convolution, at its input gradient and at its weight gradient. It is slow, at
2-8 GFLOP/s against 100-200 for the others (benchmarks/README.md, "Speed"), at the weight
gradient of a convolution whose input gradient it produced itself (a fully padded or an lhs-dilated
convolution). StyleGAN2 meets that case everywhere: the R1 penalty (Mescheder et al. 2018) and the path-length
regulariser (Karras et al. 2020, §3.2) differentiate an input gradient with respect to the weights, through
the stride-2 convolutions of D and the transposed convolutions of G.

`valid_conv` closes the family: a stride-1 VALID convolution F(x, w), its input gradient I(g, w) and its
weight gradient W(x, g) are three `custom_vjp` functions whose backward passes are again F, I and W (see
the rules below). F and I run as XLA's own convolution and its input gradient; W as one matmul per tap
(contracting batch and positions), which XLA's SPMD partitioner also handles when the batch is sharded. Any
order of differentiation stays within the three. `conv2d` builds padding and stride 2 on it (explicit padding;
stride 2 as the sum of four stride-1 convolutions of the input's parity phases, the same multiply-adds as the
strided convolution).

NHWC activations, HWIO weights; results equal `jax.lax.conv_general_dilated` to float rounding
(tests/ops/conv_test.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_DN = ("NHWC", "HWIO", "NHWC")


def _native(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=_DN)


@jax.custom_vjp
def valid_conv(x, w):
  """F(x, w): stride-1 VALID correlation of (B, H, W, Cin) x with (kh, kw, Cin, Cout) w."""
  return _native(x, w)


@jax.custom_vjp
def _input_grad(g, w):
  """I(g, w) = (dF/dx)^T g: the full convolution of g with w, shaped like F's input."""
  kh, kw = w.shape[:2]
  b, ho, wo, _ = g.shape
  x = jax.ShapeDtypeStruct((b, ho + kh - 1, wo + kw - 1, w.shape[2]), g.dtype)
  return jax.linear_transpose(lambda x: _native(x, w), x)(g)[0]


@jax.custom_vjp
def _weight_grad(x, g):
  """W(x, g) = (dF/dw)^T g: sum over batch and positions of x patches times g, shaped like F's weight."""
  # One matmul per tap, contracting batch and positions. (XLA's transpose rule, a conv contracting the batch,
  # is what XLA's SPMD partitioner turns into an invalid grouped conv when the batch is sharded.)
  _, h, wd, _ = x.shape
  _, ho, wo, _ = g.shape
  taps = [
    [jnp.einsum("bhwi,bhwo->io", x[:, i : i + ho, j : j + wo], g) for j in range(wd - wo + 1)]
    for i in range(h - ho + 1)
  ]
  return jnp.stack([jnp.stack(row) for row in taps])


# F, I and W are bilinear; the adjoint of each in either argument is one of the three:
#   F(x, w):  x <- I(ct, w)    w <- W(x, ct)
#   I(g, w):  g <- F(ct, w)    w <- W(ct, g)
#   W(x, g):  x <- I(g, ct)    g <- F(x, ct)
valid_conv.defvjp(
  lambda x, w: (valid_conv(x, w), (x, w)), lambda r, ct: (_input_grad(ct, r[1]), _weight_grad(r[0], ct))
)
_input_grad.defvjp(
  lambda g, w: (_input_grad(g, w), (g, w)), lambda r, ct: (valid_conv(ct, r[1]), _weight_grad(ct, r[0]))
)
_weight_grad.defvjp(
  lambda x, g: (_weight_grad(x, g), (x, g)), lambda r, ct: (_input_grad(r[1], ct), valid_conv(r[0], ct))
)


def conv2d(x, w, stride: int = 1, padding: int | tuple[int, int] = 0):
  """`lax.conv_general_dilated(x, w, (stride,) * 2, [padding] * 2)` for NHWC x, HWIO w, stride 1 or 2.

  `padding` is one symmetric int or a (before, after) pair, the same on both spatial axes.
  """
  pad = (padding, padding) if isinstance(padding, int) else tuple(padding)
  if pad != (0, 0):
    x = jnp.pad(x, ((0, 0), pad, pad, (0, 0)))
  if stride == 1:
    return valid_conv(x, w)
  if stride != 2:
    raise ValueError(f"conv2d: stride {stride} is not supported (1 or 2)")
  kh, kw = w.shape[:2]
  ho, wo = (x.shape[1] - kh) // 2 + 1, (x.shape[2] - kw) // 2 + 1
  # out[m] = sum_i x[2m + i] w[i] = sum_p sum_j x_p[m + j] w[2j + p], x_p = x[p::2]: one stride-1 conv per phase.
  out = None
  for py in range(min(2, kh)):
    for px in range(min(2, kw)):
      y = valid_conv(x[:, py::2, px::2], w[py::2, px::2])[:, :ho, :wo]
      out = y if out is None else out + y
  return out
