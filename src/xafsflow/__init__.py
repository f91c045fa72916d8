"""xafsflow: from a synchrotron XAFS campaign to Bayesian, sparse and image-analysis products.

The package import is deliberately light (no numba, dask, matplotlib or
xraylarch): heavy libraries are imported inside the steps that need them.
"""

from xafsflow.errors import (
    AnalysisInputError,
    ConfigError,
    FileFormatError,
    InputError,
    ScanSheetError,
)

__version__ = "0.1.0"

__all__ = [
    "AnalysisInputError",
    "ConfigError",
    "FileFormatError",
    "InputError",
    "ScanSheetError",
    "__version__",
]
