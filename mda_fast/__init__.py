"""mda-fast: Mechanistic Data Attribution at Pile scale."""

__version__ = "0.1.0"

from mda_fast.errors import ConfigError, DataError, MDAError, ModelError, NumericalError  # noqa: E402

__all__ = ["MDAError", "DataError", "ConfigError", "ModelError", "NumericalError", "__version__"]
