"""Writing outputs safely, on local disks and on object stores alike.

Every file i2i_jax writes for a user (translations, labels, manifests, reports,
pictures) goes through `atomic_write`: the content is written under a temporary
name beside the target and renamed to it when complete, so a reader, a rerun or
a crash never finds a half-written file under the final name. Paths are
`etils.epath` paths, so `gs://bucket/...` works wherever a local path does
(object stores rename by copy-and-delete: a half-written object still never has
the final name).

`is_within` compares local folders after resolving symbolic links; the writers
use it to refuse outputs that could overwrite or read back their inputs.
"""

from collections.abc import Iterator
import contextlib
import os
from typing import IO
import uuid

from etils import epath

TEMPORARY_SUFFIX = ".partial"


def temporary_path(path: epath.PathLike, tag: str = "") -> epath.Path:
  """The hidden temporary sibling of `path` that `atomic_write` writes first.

  Args:
    path: the final path.
    tag: names the writer (e.g. "p0" for process 0), so that the writer can
      find and delete its own leftovers after a crash; "" gives a unique name.
  """
  path = epath.Path(path)
  return path.parent / f".{path.name}.{tag or uuid.uuid4().hex}{TEMPORARY_SUFFIX}"


@contextlib.contextmanager
def atomic_write(path: epath.PathLike, mode: str = "wb", *,
                 tag: str = "") -> Iterator[IO]:
  """Opens a temporary sibling of `path`; renames it to `path` when the block ends.

  The parent folder is created. If the block raises, the temporary file is
  deleted and `path` is left as it was.

    with storage.atomic_write(out / "report.json", "w") as f:
      json.dump(report, f)

  Args:
    path: where the file ends up (any epath: local, gs://, ...).
    mode: "wb" or "w".
    tag: see `temporary_path`.
  """
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = temporary_path(path, tag)
  try:
    with temporary.open(mode) as f:
      yield f
    temporary.replace(path)
  except BaseException:
    if temporary.exists():
      temporary.unlink()
    raise


def is_local(path: epath.PathLike) -> bool:
  """Whether `path` is on a local file system (not gs://, s3://, ...)."""
  return "://" not in os.fspath(path)


def is_within(path: epath.PathLike, folder: epath.PathLike) -> bool:
  """Whether local `path` is `folder` or lies under it, symbolic links resolved.

  Paths on object stores are compared as written.
  """
  if is_local(path) and is_local(folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
  path, folder = os.fspath(path).rstrip("/"), os.fspath(folder).rstrip("/")
  return path == folder or path.startswith(folder + "/")
