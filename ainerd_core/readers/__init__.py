"""Readers that turn beamline files, plain stacks, published data and rheometer logs into
the dataset format (see :mod:`ainerd_core.ingest` for the command line).

- :mod:`.resample` - symmetrising half-stored C2 maps, the diagonal fix, area-averaging
  resampling to 256 x 256 and normalisation (one map at a time).
- :mod:`.aps` - APS 8-ID-I / boost_corr two-time result files (current and older layouts).
- :mod:`.stack` - a plain NumPy / HDF5 stack of maps with a CSV of per-map metadata.
- :mod:`.published` - the published AI-NERD E031 folder (latents only).
- :mod:`.rheology` - rheometer logs: the E031 CSV layout and Anton Paar RheoCompass exports.
"""
