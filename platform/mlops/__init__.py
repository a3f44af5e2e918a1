"""mlops: an MLOps lifecycle platform for PyTorch.

Importing this package does nothing but define names: no tracking URI is set,
no directory is made and no heavy library (torch, mlflow, optuna) is imported.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlops")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"

__all__ = ["__version__"]
