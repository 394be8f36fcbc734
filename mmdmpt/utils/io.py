"""File helpers."""

import contextlib
import os
import os.path as osp
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_write_path(path: str) -> Iterator[str]:
    """Yield a temporary path next to ``path`` that replaces it on success.

    The temporary file lives in the same folder (so the final ``os.replace``
    is atomic on POSIX file systems) and is removed if the body raises: a
    reader never sees a half-written ``path``.

    Args:
        path (str): The file to write.

    Yields:
        str: The temporary path to write to.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
