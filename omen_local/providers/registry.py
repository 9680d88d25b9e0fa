"""Which provider kinds exist: every :class:`Provider` subclass in this package.

Found by importing the package's modules, so adding a provider is adding one module.
(Frozen builds must collect the package's submodules; see packaging/.)
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from . import __name__ as _package
from . import __path__ as _path
from .base import Provider

_NOT_PROVIDERS = frozenset({"base", "errors", "registry"})


def _subclasses(cls: type) -> list[type[Provider]]:
    out: list[type[Provider]] = []
    sub: type[Provider]
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return out


@cache
def provider_kinds() -> dict[str, type[Provider]]:
    """``kind`` name (as written in the config) -> provider class."""
    for info in pkgutil.iter_modules(_path):
        if not info.name.startswith("_") and info.name not in _NOT_PROVIDERS:
            importlib.import_module(f"{_package}.{info.name}")
    return {cls.kind: cls for cls in _subclasses(Provider) if cls.kind}
