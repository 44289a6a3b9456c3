"""upfirdn2d: upsample, FIR filter, downsample (StyleGAN2, Karras et al. 2020, appendix B "resampling").

Pure-JAX replacement for the CUDA `upfirdn2d` op of rosinality/stylegan2-pytorch and its native fallback:
  1. upsample by inserting `up - 1` zeros after every sample,
  2. pad by `(pad0, pad1)` on each spatial axis (negative values crop),
  3. convolve (true convolution: the kernel is flipped) with the FIR kernel, depthwise,
  4. keep every `down`-th sample.
Images are NHWC. Separable (1-D) kernels are applied as two 1-D passes, which is what every StyleGAN2 filter
is ([1, 3, 3, 1] outer product); a 2-D kernel is applied directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def make_kernel(k: Sequence[float] | np.ndarray, separable: bool = True) -> np.ndarray:
  """Normalised FIR kernel: 1-D taps k/sum(k), or the 2-D outer product normalised to sum 1.

  rosinality's `make_kernel` builds the 2-D outer product; `separable=True` returns the 1-D factor whose
  outer product is exactly that kernel.
  """
  k = np.asarray(k, dtype=np.float32)
  if k.ndim == 1 and not separable:
    k = np.outer(k, k)
  return k / k.sum()


def _fir_1d(x: jax.Array, taps, axis: int, down: int) -> jax.Array:
  """Correlate NHWC `x` along spatial `axis` (1 = H, 2 = W) with (already flipped) taps, keep every
  `down`-th output.

  Written as a sum of shifted, strided slices: for the 2-6 taps of StyleGAN2's filters this is memory-bound
  and vectorised, where XLA's CPU convolution with a 1-channel kernel was 8x slower than the 3x3 conv it
  follows.
  """
  n = len(taps)
  length = (x.shape[axis] - n) // down + 1
  out = None
  for t, k in enumerate(taps):
    if k == 0:
      continue
    sl = jax.lax.slice_in_dim(x, t, t + (length - 1) * down + 1, stride=down, axis=axis)
    out = sl * k if out is None else out + sl * k
  return out if out is not None else jnp.zeros_like(jax.lax.slice_in_dim(x, 0, length, axis=axis))


def upfirdn2d(
  x: jax.Array,
  kernel,
  up: int | tuple[int, int] = 1,
  down: int | tuple[int, int] = 1,
  pad: tuple[int, int] | tuple[int, int, int, int] = (0, 0),
) -> jax.Array:
  """upfirdn2d on NHWC `x`.

  Args:
    x: (B, H, W, C).
    kernel: 1-D (separable) or 2-D FIR kernel, used as given (callers scale it, e.g. by up**2).
    up, down: integer factors, one for both axes or (x, y).
    pad: (pad0, pad1) for both axes, or (pad_x0, pad_x1, pad_y0, pad_y1) as upstream orders them.

  Returns:
    (B, (H*up + pad_y0 + pad_y1 - kh) // down + 1, ..., C).
  """
  up_x, up_y = (up, up) if isinstance(up, int) else up
  down_x, down_y = (down, down) if isinstance(down, int) else down
  if len(pad) == 2:
    pad = (pad[0], pad[1], pad[0], pad[1])
  px0, px1, py0, py1 = pad
  # Zero insertion and padding (negative = crop) in one lax.pad: interior padding inserts the zeros, and
  # the trailing `up - 1` zeros upstream appends after the last sample are added to the high side.
  zero = jnp.zeros((), x.dtype)
  x = jax.lax.pad(x, zero, [(0, 0, 0), (py0, py1 + up_y - 1, up_y - 1), (px0, px1 + up_x - 1, up_x - 1), (0, 0, 0)])
  # True convolution: flip the kernel. Taps are static numbers (filters are constants, not learned).
  kernel = np.asarray(kernel, np.float32)
  if kernel.ndim == 1:
    taps = [float(t) for t in kernel[::-1]]
    x = _fir_1d(x, taps, axis=1, down=down_y)
    return _fir_1d(x, taps, axis=2, down=down_x)
  k2 = kernel[::-1, ::-1]
  kh, kw = k2.shape
  ho = (x.shape[1] - kh) // down_y + 1
  wo = (x.shape[2] - kw) // down_x + 1
  out = jnp.zeros((x.shape[0], ho, wo, x.shape[3]), x.dtype)
  for i in range(kh):
    for j in range(kw):
      if k2[i, j] != 0:
        sl = jax.lax.slice(
          x,
          (0, i, j, 0),
          (x.shape[0], i + (ho - 1) * down_y + 1, j + (wo - 1) * down_x + 1, x.shape[3]),
          (1, down_y, down_x, 1),
        )
        out = out + sl * float(k2[i, j])
  return out


def blur(x: jax.Array, kernel, pad: tuple[int, int], upsample_factor: int = 1) -> jax.Array:
  """rosinality `Blur`: FIR filter with the kernel scaled by upsample_factor**2 (DC gain kept after zero
  insertion)."""
  k = np.asarray(kernel, np.float32)
  # A separable kernel's 2-D gain is the product of two 1-D gains: scale each 1-D factor by the factor.
  k = k * (upsample_factor if k.ndim == 1 else upsample_factor**2)
  return upfirdn2d(x, k, pad=pad)


def blur_before_downsampling_conv(x: jax.Array, blur_kernel, kernel_size: int) -> jax.Array:
  """rosinality's blur ahead of a stride-2 `kernel_size` convolution (ConvLayer, ModulatedConv2d with
  downsample): padded by p = len(blur_kernel) - 2 + kernel_size - 1, split ((p + 1) // 2, p // 2), so that
  the unpadded stride-2 convolution then halves the size."""
  p = (len(blur_kernel) - 2) + (kernel_size - 1)
  return blur(x, make_kernel(blur_kernel), pad=((p + 1) // 2, p // 2))


def upsample2d(x: jax.Array, kernel, factor: int = 2) -> jax.Array:
  """rosinality `Upsample` (ToRGB skips): upfirdn2d(up=factor, kernel*factor**2, pad) keeping H*factor."""
  k = np.asarray(kernel, np.float32)
  p = k.shape[0] - factor
  pad0, pad1 = (p + 1) // 2 + factor - 1, p // 2
  return upfirdn2d(x, k * (factor if k.ndim == 1 else factor**2), up=factor, pad=(pad0, pad1))


def downsample2d(x: jax.Array, kernel, factor: int = 2) -> jax.Array:
  """rosinality `Downsample`: upfirdn2d(down=factor) keeping H/factor."""
  k = np.asarray(kernel, np.float32)
  p = k.shape[0] - factor
  return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))
