"""The input-file writers live in :mod:`ainerd_core.testing` (the benchmarks use them too)."""
from ainerd_core.testing import (c2_full, grid_labels, upper, write_aps_legacy, write_aps_nexus,  # noqa: F401
                                 write_rheocompass)
