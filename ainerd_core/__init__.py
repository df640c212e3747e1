"""AI-NERD core: dataset format, simulator, readers, autoencoder, analysis and evaluation.

Nothing here imports Dash. Heavy modules (torch, umap) are imported only by the functions
that need them, so ``import ainerd_core`` is cheap.
"""
from .dataset import SCHEMA_VERSION, Dataset, DatasetWriter, open_dataset, write_dataset
from .errors import AinerdError, InputError
from .results import K_SET, read_results, write_results  # /results through its declared contract

__version__ = "0.1.0"
__all__ = ["SCHEMA_VERSION", "Dataset", "DatasetWriter", "open_dataset", "write_dataset",
           "write_results", "read_results", "K_SET", "AinerdError", "InputError", "__version__"]
