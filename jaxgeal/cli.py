"""What every jaxgeal command line shares: number arguments, safe output paths, output names, error lines.

* Argument types (`positive_int`, `nonnegative_int`, `positive_float`, `nonnegative_float`, `fraction`) for
  argparse `type=`: a bad value stops the parser with "argument --batch_size: must be a positive integer, got '0'"
  instead of failing deep inside a computation.
* `check_outputs(outputs, inputs)`: refuses, before anything is written, an output that is an input
  (the same file by path, relative path, symlink or hard link) or a directory holding one, so no command
  ever writes over what it reads. `check_output_dir` / `check_output_file` name a file standing where a
  directory is needed. Both raise `UsageError`.
* `output_names(files)`: one output name per input. The rule, the same in every command: an input's name
  is its stem ("cat" for cat.jpg) unless another input has the same stem, or the stem is another input's
  file name or a reserved name; then it is the whole file name ("cat.jpg", "cat.png": outputs cat.jpg.png
  and cat.png.png). Names so chosen never collide.
* `list_images(path)`: an image file, or the images directly in a folder (sorted), or a one-line error.
* `error_line(e)`: the one line a command prints for a user mistake or an OS error ("PATH: Not a
  directory"), never a traceback.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import sys
from collections.abc import Iterable, Sequence

OUTPUT_NAME_RULE = (
  "outputs are named by the input's stem (cat.jpg -> cat.png); inputs sharing a stem keep "
  "their whole name (cat.jpg, cat.png -> cat.jpg.png, cat.png.png)"
)


class UsageError(ValueError):
  """A user mistake the command refuses before doing anything; the message is one line."""


# -- argument types ------------------------------------------------------------------------------------------


def _number(text: str, kind, what: str, ok) -> int | float:
  try:
    value = kind(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
  if kind is float and value != value:  # NaN compares false with everything.
    raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
  if not ok(value):
    raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
  return value


def positive_int(text: str) -> int:
  """argparse type: an integer > 0."""
  return _number(text, int, "a positive integer", lambda v: v > 0)


def nonnegative_int(text: str) -> int:
  """argparse type: an integer >= 0."""
  return _number(text, int, "an integer >= 0", lambda v: v >= 0)


def at_least(minimum: int):
  """argparse type factory: an integer >= minimum."""

  def parse(text: str) -> int:
    return _number(text, int, f"an integer >= {minimum}", lambda v: v >= minimum)

  parse.__name__ = f"int_at_least_{minimum}"
  return parse


def positive_float(text: str) -> float:
  """argparse type: a finite number > 0."""
  return _number(text, float, "a positive number", lambda v: 0 < v < float("inf"))


def nonnegative_float(text: str) -> float:
  """argparse type: a finite number >= 0."""
  return _number(text, float, "a number >= 0", lambda v: 0 <= v < float("inf"))


def fraction(text: str) -> float:
  """argparse type: a number in [0, 1]."""
  return _number(text, float, "a number in [0, 1]", lambda v: 0 <= v <= 1)


# -- output paths --------------------------------------------------------------------------------------------


def _identity(path: pathlib.Path):
  """(device, inode) of an existing path, else None."""
  try:
    st = path.stat()
  except OSError:
    return None
  return st.st_dev, st.st_ino


def _real(path) -> pathlib.Path:
  return pathlib.Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def check_outputs(outputs: Iterable, inputs: Iterable) -> None:
  """Raises UsageError if writing `outputs` would overwrite or replace any of `inputs`.

  An output conflicts with an input that is the same file (resolved path, or the same inode: symlinks and
  hard links) or lies inside it (an output directory that is replaced as a whole), and two outputs at one
  path. Inputs that do not exist are ignored.
  """
  outputs = [pathlib.Path(o) for o in outputs if o is not None]
  seen = {}
  for o in outputs:
    if _real(o) in seen:
      raise UsageError(f"two outputs would both be written to {o}; rename an input or choose other outputs")
    seen[_real(o)] = o
  ins = []
  for inp in inputs:
    if inp is None:
      continue
    p = pathlib.Path(inp)
    ident = _identity(p)
    if ident is not None:
      ins.append((p, _real(p), ident))
  for o in outputs:
    o_real, o_ident = _real(o), _identity(o)
    for p, p_real, ident in ins:
      if ident == o_ident or p_real == o_real:
        raise UsageError(f"output {o} is the input {p}: refusing to write over it; choose another output")
      if o_real in p_real.parents:
        raise UsageError(f"output {o} holds the input {p}: refusing to replace it; choose another output")


IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def list_images(path) -> list[pathlib.Path]:
  """[path] for a file, the images (IMAGE_EXTS) directly in a folder, sorted; FileNotFoundError otherwise."""
  p = pathlib.Path(path)
  if not p.exists():
    raise FileNotFoundError(f"input {p} does not exist")
  if p.is_file():
    return [p]
  files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
  if not files:
    raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTS)}) in {p}")
  return files


def files_under(path) -> list[pathlib.Path]:
  """Every file under a directory (recursively), or [path] for a file: the inputs a directory argument holds."""
  p = pathlib.Path(path)
  if p.is_dir():
    return [f for f in p.rglob("*") if f.is_file()]
  return [p]


def _first_existing(path: pathlib.Path) -> pathlib.Path:
  path = pathlib.Path(os.path.abspath(path))
  while not path.exists() and path.parent != path:
    path = path.parent
  return path


def check_output_dir(path, what: str = "output directory") -> None:
  """Raises UsageError if `path` cannot become a directory: it, or a folder above it, is a file. A bucket path
  (gs://...) is not checked here: its errors come from the first write."""
  if "://" in os.fspath(path):
    return
  p = pathlib.Path(path)
  existing = _first_existing(p)
  if not existing.is_dir():
    if existing == pathlib.Path(os.path.abspath(p)):
      raise UsageError(f"{what} {p} is a file, not a directory")
    raise UsageError(f"{what} {p}: {existing} is a file, not a directory")
  if not os.access(existing, os.W_OK):
    raise UsageError(f"{what} {p}: {existing} is not writable")


def check_output_file(path, what: str = "output file") -> None:
  """Raises UsageError if `path` cannot be written as a file: it is a directory or its folder cannot exist."""
  p = pathlib.Path(path)
  if p.is_dir():
    raise UsageError(f"{what} {p} is a directory, not a file")
  check_output_dir(p.parent if str(p.parent) else ".", what=f"{what} {p}'s folder")


# -- output names --------------------------------------------------------------------------------------------


def output_names(files: Sequence, reserved: Iterable[str] = ()) -> list[str]:
  """One distinct output name (no extension) per input file, by the rule in the module docstring."""
  files = [pathlib.Path(f) for f in files]
  stems = collections.Counter(f.stem for f in files)
  full = collections.Counter(f.name for f in files)
  taken = set(reserved)
  names = []
  for f in files:
    unique = stems[f.stem] == 1 and (full[f.stem] == 0) and f.stem not in taken
    names.append(f.stem if unique else f.name)
  dup = [n for n, c in collections.Counter(names).items() if c > 1]
  if dup:  # Same file name twice: inputs from different folders.
    raise UsageError(f"two inputs would both be written as {dup[0]!r}; rename one of them")
  return names


# -- error lines ---------------------------------------------------------------------------------------------


def print_error(message: str):
  """Print 'error: MESSAGE' to stderr in one write: the processes of a job share one stderr, and a line written
  in two pieces (print's text, then its newline) can be cut by another process's line."""
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()


def error_line(e: BaseException) -> str:
  """What a failed command prints after 'error: ': 'PATH: reason' for OS errors, the message otherwise."""
  if isinstance(e, OSError) and e.filename is not None:
    reason = e.strerror or type(e).__name__
    where = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else f"{e.filename}"
    return f"{where}: {reason}"
  text = str(e) or type(e).__name__
  if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
    text = e.args[0]
  return text
