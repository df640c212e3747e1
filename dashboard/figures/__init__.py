"""Pure figure builders of the dashboard: arrays in, ``plotly.graph_objects.Figure`` out.

No Dash, no files, no datasets here, so every figure is unit-tested without a server
(``tests/test_figures_core.py``). Shared colours and the lean template: :mod:`.common`.

- :mod:`.timeline`   Figure 3A+B: shear stress over the time-resolved cluster histogram
- :mod:`.sectors`    Figure 3C: cluster label vs (time, sector)
- :mod:`.latent_map` Figure 3D and Supplementary Fig. 4: the UMAP plane
- :mod:`.similarity`, :mod:`.clusters`, :mod:`.model`: the other pages' figures
"""
