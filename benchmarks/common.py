"""What every benchmark shares: the ``--json`` figures file and the process's peak memory."""
from __future__ import annotations

import json
import resource
from pathlib import Path


def write_json(path, figures: dict) -> None:
    """Write ``figures`` to ``path`` (the ``--json`` option) when one was given; values JSON
    cannot hold (paths, numpy scalars) are written as text."""
    if path:
        Path(path).write_text(json.dumps(figures, indent=1, default=str))


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
