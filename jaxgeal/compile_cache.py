"""JAX's persistent compilation cache for jaxgeal's commands: a program compiled once (the paper training
step: ~20-40 s on a 2-core CPU) is read back from disk by the next run that compiles the same program on the
same JAX and device, so a resumed training run or a second `jaxgeal.align` call starts in seconds.

The cache lives in $JAXGEAL_COMPILATION_CACHE if set, else under the user cache ($JAXGEAL_CACHE, else
~/.cache/jaxgeal) in `jax/`. `off` (or `none`, `0`, empty) as that variable or as `jaxgeal.main
--compilation_cache` turns it off. A cache directory set through JAX's own configuration
(JAX_COMPILATION_CACHE_DIR, as the test suite does) is left as it is.
"""

from __future__ import annotations

import os

import jax

from jaxgeal import storage

ENV = "JAXGEAL_COMPILATION_CACHE"
OFF = ("off", "none", "0", "")
# Programs that compile faster than this are not worth a file each (JAX's default is 1 s): the training and
# congealing steps take 2-40 s, a set-up function (init, PCA) a few tenths; together those make up a start.
MIN_COMPILE_SECS = 0.2


def default_dir() -> str:
  return os.fspath(storage.cache_dir() / "jax")


def enable(directory: str | None = None) -> str | None:
  """Turns the cache on in `directory` (None: $JAXGEAL_COMPILATION_CACHE, else `default_dir()`); returns the
  directory in use, or None when turned off. Call before the first compilation."""
  configured = jax.config.jax_compilation_cache_dir
  if configured:
    return configured
  if directory is None:
    directory = os.environ.get(ENV, default_dir())
  if directory.strip().lower() in OFF:
    return None
  directory = os.path.expanduser(directory)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
  return directory
