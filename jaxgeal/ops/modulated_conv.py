"""Modulated convolution with weight demodulation (StyleGAN2, Karras et al. 2020, §2.2, eqs. 1-3).

  w'_ijk   = s_i * w_ijk                             (1)  modulation by the per-sample style s
  sigma_j  = sqrt(sum_ik w'_ijk^2 + eps)             (2)
  w''_ijk  = w'_ijk / sigma_j                        (3)  demodulation

with i the input channel, j the output channel, k the spatial tap, and the equalised-learning-rate scale
1/sqrt(fan_in) folded into w. Three equivalent implementations, all NHWC with HWIO weights:

* "input_scaling": scale the *activations* by s, convolve with the shared weight, scale the output by
  1/sigma (the non-fused path of NVIDIA's StyleGAN2-ADA). One ordinary conv for the whole batch.
* "grouped": build a per-sample weight and run one grouped convolution with `feature_group_count = B`
  (what rosinality does).
* "vmap": build a per-sample weight and `jax.vmap` an ordinary convolution over the batch.

They agree to float32 rounding (tests/ops/modulated_conv_test.py); `benchmarks/stylegan2.py` measures them and
DEFAULT_IMPL is the fastest on CPU.

The Swapping Autoencoder (Park et al. 2020) uses a variant, upstream's "new_demodulation"
(`normalize_style=True`): the style is first divided by its RMS over input channels, the activations are scaled
by it, and the output is demodulated by the norm of the *unmodulated* weight, sigma_j = sqrt(sum_ik w_ijk^2 + eps).

Upsampling follows rosinality exactly: a stride-2 *transposed* convolution with the (unflipped) modulated
weight, then a [1,3,3,1] blur with padding (1, 1). Downsampling: blur, then a stride-2 convolution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgeal.ops import conv as conv_ops
from jaxgeal.ops import upfirdn2d as fir

IMPLS = ("input_scaling", "grouped", "vmap")
DEFAULT_IMPL = "input_scaling"
_DN = ("NHWC", "HWIO", "NHWC")


def conv_transpose_stride2(x, w, groups: int = 1):
  """torch `conv_transpose2d(x, w, stride=2, padding=0)` for NHWC x and HWIO w (w not flipped).

  out[2m + p] = sum_j x[m - j] w[p + 2j] on each axis: the output splits into 2 x 2 phases, each an ordinary
  convolution of the *undilated* input with the taps of its parity. This does the 9 multiply-adds per input
  pixel of a 3x3 kernel, where convolving a zero-dilated input would do 36 (measured 7x slower on CPU).
  Output size 2H + k - 2.
  """
  k = w.shape[0]
  b, h, wd, _ = x.shape
  phases = []
  for py in range(2):
    row = []
    for px in range(2):
      wp = w[py::2, px::2][::-1, ::-1]  # taps of this parity, flipped for correlation
      ny, nx = wp.shape[:2]
      # Phase p has H + n_p - 1 outputs; pad every phase to H + ceil(k/2) - 1 to interleave.
      fh, fw = h + (k + 1) // 2 - 1, wd + (k + 1) // 2 - 1
      if ny == 0 or nx == 0:  # k = 1: odd phases receive no tap
        y = jnp.zeros((b, fh, fw, w.shape[3]), x.dtype)
      else:
        # Padded first, then VALID: with the padding inside the conv, XLA:CPU's weight gradient of these
        # 2x2 / 2x1 / 1x2 taps ran at ~2 GFLOP/s (5 s per G-256 up-layer). ops.conv keeps higher orders fast.
        xp = jnp.pad(x, ((0, 0), (ny - 1, ny - 1), (nx - 1, nx - 1), (0, 0)))
        if groups == 1:
          y = conv_ops.valid_conv(xp, wp)
        else:
          y = jax.lax.conv_general_dilated(xp, wp, (1, 1), "VALID", dimension_numbers=_DN, feature_group_count=groups)
      y = jnp.pad(y, ((0, 0), (0, fh - y.shape[1]), (0, fw - y.shape[2]), (0, 0)))
      row.append(y)
    phases.append(jnp.stack(row, axis=3))  # (B, Hf, Wf, 2[px], C)
  out = jnp.stack(phases, axis=2)  # (B, Hf, 2[py], Wf, 2[px], C)
  bf, hf, _, wf, _, c = out.shape
  out = out.reshape(bf, 2 * hf, 2 * wf, c)
  return out[:, : 2 * h + k - 2, : 2 * wd + k - 2]


def _conv(x, w, up: bool, down: bool, groups: int = 1):
  """Plain conv of NHWC x with HWIO w: same padding, or transposed stride-2 (up), or stride 2 (down)."""
  k = w.shape[0]
  if up:
    return conv_transpose_stride2(x, w, groups)
  if groups == 1:
    return conv_ops.conv2d(x, w, 2 if down else 1, 0 if down else k // 2)
  if down:
    return jax.lax.conv_general_dilated(x, w, (2, 2), "VALID", dimension_numbers=_DN, feature_group_count=groups)
  return jax.lax.conv_general_dilated(
    x, w, (1, 1), [(k // 2, k // 2)] * 2, dimension_numbers=_DN, feature_group_count=groups
  )


def _blur_after_up(x, blur_kernel, k):
  factor = 2
  p = (len(blur_kernel) - factor) - (k - 1)
  pad = ((p + 1) // 2 + factor - 1, p // 2 + 1)
  return fir.blur(x, fir.make_kernel(blur_kernel), pad=pad, upsample_factor=factor)


def modulated_conv2d(
  x: jax.Array,
  weight: jax.Array,
  style: jax.Array,
  *,
  demodulate: bool = True,
  up: bool = False,
  down: bool = False,
  blur_kernel=(1, 3, 3, 1),
  eps: float = 1e-8,
  impl: str = DEFAULT_IMPL,
  normalize_style: bool = False,
) -> jax.Array:
  """Modulated (and demodulated) convolution.

  Args:
    x: (B, H, W, Cin) activations.
    weight: (k, k, Cin, Cout) weight, already multiplied by the equalised-lr scale 1/sqrt(Cin k k).
    style: (B, Cin) modulation s (the output of the style affine layer).
    demodulate: apply eqs. (2)-(3) (False for ToRGB).
    up / down: stride-2 transposed conv + blur, or blur + stride-2 conv.
    impl: one of IMPLS.
    normalize_style: the Swapping Autoencoder's demodulation (see the module docstring); only with demodulate.

  Returns:
    (B, H', W', Cout) with H' = 2H (up), H/2 (down) or H.
  """
  if up and down:
    raise ValueError("modulated_conv2d: up and down are exclusive")
  b, _, _, cin = x.shape
  k, _, _, cout = weight.shape
  # Styles and demodulation coefficients (sums of squares, rsqrt) in at least float32 whatever x's dtype; the
  # convolution itself runs in x's dtype (bfloat16 in mixed precision).
  stat_dtype = jnp.promote_types(x.dtype, jnp.float32)
  style = style.astype(stat_dtype)
  weight = weight.astype(stat_dtype)
  if down:
    x = fir.blur_before_downsampling_conv(x, blur_kernel, k)
  if demodulate and normalize_style:
    # swapping-autoencoder ModulatedConv2d.forward, new_demodulation: s / rms(s), weight demodulated unmodulated.
    style = style * jax.lax.rsqrt(jnp.mean(style * style, axis=1, keepdims=True) + 1e-8)
    dcoef = jnp.broadcast_to(jax.lax.rsqrt(jnp.sum(weight * weight, axis=(0, 1, 2)) + eps), (b, cout))
  elif demodulate:
    # sigma_j^{-1} = rsqrt(sum_{i,k} (s_i w_ijk)^2 + eps) = rsqrt(sum_i s_i^2 sum_k w_ijk^2 + eps)   (2)
    dcoef = jax.lax.rsqrt((style * style) @ jnp.sum(weight * weight, axis=(0, 1)) + eps)  # (B, Cout)

  if impl == "input_scaling":
    y = _conv(x * style[:, None, None, :].astype(x.dtype), weight.astype(x.dtype), up, down)
    if demodulate:
      y = y * dcoef[:, None, None, :].astype(x.dtype)
  elif impl in ("grouped", "vmap"):
    w = weight[None] * style[:, None, None, :, None]  # (B, k, k, Cin, Cout)  (1)
    if demodulate:
      w = w * dcoef[:, None, None, None, :]  # (3)
    w = w.astype(x.dtype)
    if impl == "vmap":
      y = jax.vmap(lambda xi, wi: _conv(xi[None], wi, up, down)[0])(x, w)
    else:
      xg = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, x.shape[1], x.shape[2], b * cin)
      wg = jnp.transpose(w, (1, 2, 3, 0, 4)).reshape(k, k, cin, b * cout)  # groups along the batch
      y = _conv(xg, wg, up, down, groups=b)
      y = jnp.transpose(y.reshape(y.shape[1], y.shape[2], b, cout), (2, 0, 1, 3))
  else:
    raise ValueError(f"modulated_conv2d: unknown impl {impl!r}, expected one of {IMPLS}")

  if up:
    y = _blur_after_up(y, blur_kernel, k)
  return y


def reference_modulated_conv2d(x, weight, style, demodulate=True, eps=1e-8):
  """Explicit per-sample loop in numpy (float64), eqs. (1)-(3), for tests: same-padding, no resampling."""
  x = np.asarray(x, np.float64)
  weight = np.asarray(weight, np.float64)
  style = np.asarray(style, np.float64)
  b, h, wd, _ = x.shape
  k, _, _, cout = weight.shape
  p = k // 2
  out = np.zeros((b, h, wd, cout))
  for n in range(b):
    w = weight * style[n][None, None, :, None]
    if demodulate:
      w = w / np.sqrt(np.sum(w**2, axis=(0, 1, 2)) + eps)
    xp = np.pad(x[n], ((p, p), (p, p), (0, 0)))
    for dy in range(k):
      for dx in range(k):
        out[n] += xp[dy : dy + h, dx : dx + wd] @ w[dy, dx]
  return out
