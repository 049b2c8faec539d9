"""Package attributes imported on first use (PEP 562), so that importing a package costs nothing until a name is
needed: the heavy dependencies (transformers, torch) then load only for the commands and calls that use them."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module-level `__getattr__` and `__dir__` of a package whose public names load on first access.

    Args:
        package: the package's `__name__`.
        names: public name -> module that defines it, relative to the package (e.g. `".cards"`).

    Submodules are reachable as attributes too (`jetspec_hf.hub`), as they would be after an eager import.
    """

    def __getattr__(name: str):
        if name in names:
            value = getattr(importlib.import_module(names[name], package), name)
        elif not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        # Later look-ups find the value in the module's namespace and skip this function.
        vars(importlib.import_module(package))[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(names))

    return __getattr__, __dir__


__all__ = ["lazy_exports"]
