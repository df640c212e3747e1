"""Readers that turn beamline files, plain stacks, published data and rheometer logs into
the dataset format (see :mod:`ainerd_core.ingest` for the command line).

- :mod:`.resample` - symmetrising half-stored C2 maps, the diagonal fix, area-averaging
  resampling to 256 x 256 and normalisation (one map at a time).
- :mod:`.aps` - APS 8-ID-I / boost_corr two-time result files (current and older layouts).
- :mod:`.stack` - a plain NumPy / HDF5 stack of maps with a CSV of per-map metadata.
- :mod:`.published` - the published AI-NERD E031 folder (latents only).
- :mod:`.rheology` - rheometer logs: the E031 CSV layout and Anton Paar RheoCompass exports.
"""


def read_csv_rows(path) -> list[tuple[int, list[str]]]:
    """Non-blank rows of a UTF-8 CSV (a BOM is allowed) as (1-based line number, cells).

    Raises :class:`~ainerd_core.errors.InputError` for a missing file or another encoding."""
    import csv
    from pathlib import Path

    from ..errors import InputError

    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(path, "is not UTF-8 text (wrong encoding)") from None
    return [(i + 1, r) for i, r in enumerate(csv.reader(text.splitlines())) if any(c.strip() for c in r)]
