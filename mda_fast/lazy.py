"""Package attributes imported on first use (PEP 562), so importing one light submodule of a package
(``attribution.run.settings``, ``models.device``) does not load its heavy siblings (transformers)."""

from __future__ import annotations

import importlib


def lazy_attributes(package: str, homes: dict[str, str]):
    """A module ``__getattr__`` that imports each name of ``homes`` ({name: submodule}) when first used."""
    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)
    return __getattr__
