"""Building a head repository's `custom_generate/` folder from the installed package's own source.

`generate(custom_generate=<repo or folder>, trust_remote_code=True)` makes transformers fetch
`custom_generate/generate.py` and, recursively, every sibling module it imports with a one-dot relative import
(`from .name import ...`), copy them into its dynamic-module cache and import `generate` from there. Nothing else
of the repository is importable, so the tree loop must travel as flat sibling modules.

Rather than keeping a second copy of the package in git, the folder is produced at prepare time: starting from
`jetspec_hf.hub.remote_generate`, the package modules it needs (transitively) are copied flat and every
package-relative import is rewritten to name its flat sibling. The copies are therefore always the code that the
installed package itself runs.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import transformers

PACKAGE = "jetspec_hf"
ENTRY_MODULE = f"{PACKAGE}.hub.remote_generate"
CUSTOM_GENERATE_DIR = "custom_generate"
# The constant of the entry module that names where the head weights live; filled in at prepare time.
HEAD_LOCATION_NAME = "HEAD_LOCATION"

# `from <dots><dotted.name> import` up to the `import` keyword: the part of an import statement that is rewritten.
_IMPORT_PREFIX = re.compile(r"from\s+(\.*)([\w.]*)\s+import\b")


@dataclass(frozen=True)
class _ModuleImport:
    """One import statement of a package module that names another package module."""

    node: ast.ImportFrom
    target: str  # absolute dotted name of the imported package module


def _source_path(module_name: str) -> Path:
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise ImportError(f"Cannot find the Python source of {module_name!r}, needed to build `custom_generate/`.")
    return Path(spec.origin)


def _is_package(module_name: str) -> bool:
    return _source_path(module_name).name == "__init__.py"


def _in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _resolve(node: ast.ImportFrom, module_name: str) -> str | None:
    """Absolute name of the module an import statement reads from, or `None` when it is outside the package."""
    if node.level == 0:
        name = node.module or ""
        return name if _in_package(name, module_name.split(".")[0]) else None
    # A relative import is resolved against the module's package: itself for an `__init__`, else its parent.
    package = module_name if _is_package(module_name) else module_name.rpartition(".")[0]
    parts = package.split(".")
    if node.level - 1 >= len(parts):
        raise ImportError(f"{module_name}: relative import beyond the top-level package (line {node.lineno}).")
    base = ".".join(parts[: len(parts) - (node.level - 1)])
    return f"{base}.{node.module}" if node.module else base


def _package_imports(module_name: str, tree: ast.Module) -> list[_ModuleImport]:
    """The imports of `module_name` (parsed as `tree`) that read from its own top-level package, at any depth."""
    package = module_name.split(".")[0]
    imports = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _in_package(alias.name, package):
                    raise ImportError(
                        f"{module_name} line {node.lineno}: `import {alias.name}` cannot be flattened into "
                        "`custom_generate/`; use `from .module import name`."
                    )
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, module_name)
            if target is None:
                continue
            if not node.module or target == package:
                # transformers only follows `from .name import ...`: `from . import name` would not be fetched, and
                # the top-level package is not copied.
                raise ImportError(
                    f"{module_name} line {node.lineno}: `from {'.' * node.level}{node.module or ''} import ...` "
                    "cannot be followed by transformers' remote-code loader; import from the module that defines the "
                    "name (`from .module import name`)."
                )
            imports.append(_ModuleImport(node=node, target=target))
    return imports


def collect_modules(entry_module: str = ENTRY_MODULE, entry_name: str = "generate") -> dict[str, str]:
    """The package modules that `entry_module` needs, transitively: `{absolute name: flat name}`.

    "Needs" means imported from the same top-level package, relatively or absolutely, anywhere in the module
    (function-level imports included: transformers' loader fetches those too). The entry module's flat name is
    `entry_name`; any other module's is its last dotted component. Flat names must be unique, since all the modules
    land in one folder.
    """
    flat_names: dict[str, str] = {}
    pending = [entry_module]
    while pending:
        module_name = pending.pop()
        if module_name in flat_names:
            continue
        flat = entry_name if module_name == entry_module else module_name.rpartition(".")[2]
        clash = next((other for other, name in flat_names.items() if name == flat), None)
        if clash is not None:
            raise ImportError(
                f"{module_name} and {clash} would both become `{flat}.py` in `custom_generate/`; rename one of them."
            )
        flat_names[module_name] = flat
        tree = ast.parse(_source_path(module_name).read_text(encoding="utf-8"))
        pending.extend(item.target for item in _package_imports(module_name, tree))
    return flat_names


def flatten_module(module_name: str, flat_names: dict[str, str], constants: dict[str, object] | None = None) -> str:
    """The source of `module_name` with every package import rewritten to `from .<flat name> import ...`.

    `constants` replaces module-level assignments `NAME = ...` (one line each) by `NAME = <repr(value)>`.
    """
    source = _source_path(module_name).read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    for item in _package_imports(module_name, tree):
        row, column = item.node.lineno - 1, item.node.col_offset
        line = lines[row]
        match = _IMPORT_PREFIX.match(line, column)
        if match is None:
            raise ImportError(
                f"{module_name} line {item.node.lineno}: the `from ... import` prefix must be on one line to be "
                "rewritten for `custom_generate/`."
            )
        lines[row] = f"{line[:column]}from .{flat_names[item.target]} import{line[match.end():]}"
    for name, value in (constants or {}).items():
        assignment = _module_assignment(tree, name, module_name)
        if assignment.end_lineno != assignment.lineno:
            raise ValueError(f"{module_name}: the assignment of {name} must fit on one line to be filled in.")
        lines[assignment.lineno - 1] = f"{name} = {value!r}\n"
    return "".join(lines)


def _module_assignment(tree: ast.Module, name: str, module_name: str) -> ast.stmt:
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return node
    raise ValueError(f"{module_name} has no module-level assignment of {name!r} to fill in.")


def _requirements() -> str:
    # transformers checks these before running the code. One specifier each: its parser splits on the first one.
    major, minor = transformers.__version__.split(".")[:2]
    return "\n".join(
        [
            "# Checked by transformers before running custom_generate/generate.py.",
            f"transformers>={major}.{minor}",
            "torch",
            "",
        ]
    )


def write_custom_generate(output_dir: str | Path, head_location: str | None) -> list[Path]:
    """Write `<output_dir>/custom_generate/`: `generate.py`, its flat sibling modules and `requirements.txt`.

    Args:
        output_dir: the prepared repository folder.
        head_location: repo id (or local folder) that `generate.py` loads the head from by default; written into
            the copied `HEAD_LOCATION` constant. `None` leaves it unset (callers must then pass `draft_head=`).

    Returns:
        The written files, `generate.py` first.
    """
    folder = Path(output_dir) / CUSTOM_GENERATE_DIR
    # The folder is generated: start clean, so that modules the package no longer needs do not linger in it.
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    flat_names = collect_modules(ENTRY_MODULE)
    written = []
    for module_name, flat in flat_names.items():
        constants = {HEAD_LOCATION_NAME: head_location} if module_name == ENTRY_MODULE else None
        source = flatten_module(module_name, flat_names, constants)
        # The entry module's flat name is `generate`: the only file name transformers looks for.
        path = folder / f"{flat}.py"
        path.write_text(source, encoding="utf-8")
        written.append(path)
    requirements = folder / "requirements.txt"
    requirements.write_text(_requirements(), encoding="utf-8")
    written.append(requirements)
    return written


def read_head_location(output_dir: str | Path) -> str | None:
    """The `HEAD_LOCATION` written into `<output_dir>/custom_generate/generate.py`, or `None` if unset/absent."""
    path = Path(output_dir) / CUSTOM_GENERATE_DIR / "generate.py"
    if not path.is_file():
        return None
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assignment = _module_assignment(tree, HEAD_LOCATION_NAME, str(path))
    return ast.literal_eval(assignment.value)


__all__ = ["collect_modules", "flatten_module", "read_head_location", "write_custom_generate"]
