"""Opening the embedding model without LiteRT's start-up chatter on stderr.

LiteRT's C++ runtime writes ``INFO: Created TensorFlow Lite XNNPACK delegate
for CPU.`` straight to file descriptor 2 when the first interpreter is made
(once per process), below Python's logging, so no logger level silences it
and every command printed it (issue 18, row 10). :func:`open_embedding_model`
makes the model with fd 2 pointed at a temporary file, then writes back
everything captured except LiteRT's ``INFO:`` lines: warnings and errors
still reach stderr.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

__all__ = ["open_embedding_model", "quiet_litert_info"]


@contextlib.contextmanager
def quiet_litert_info() -> Iterator[None]:
    """Capture fd 2 for the block; re-emit what was written there, less ``INFO:`` lines."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 (embedded use): nothing to quieten
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        try:
            os.dup2(tmp.fileno(), 2)
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not ln.startswith("INFO: ")]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def open_embedding_model(*args: Any, **kwargs: Any) -> Any:
    """``edge.EmbeddingModel(*args, **kwargs)``, made under :func:`quiet_litert_info`."""
    from edge import EmbeddingModel

    with quiet_litert_info():
        return EmbeddingModel(*args, **kwargs)
