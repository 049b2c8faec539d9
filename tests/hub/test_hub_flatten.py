"""Flattening package modules into `custom_generate/`, on a synthetic package: relative, absolute and
function-level imports; the forms transformers' loader cannot follow are refused."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest
from transformers.dynamic_module_utils import get_relative_import_files

from jetspec_hf.hub.remote_code import collect_modules, flatten_module


@pytest.fixture
def make_package(tmp_path, monkeypatch):
    """Write `{relative path: source}` as an importable package named `flatpkg` (fresh for each test)."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(files: dict[str, str]) -> None:
        for relative, source in files.items():
            path = tmp_path / "flatpkg" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
        for name in [name for name in sys.modules if name.split(".")[0] == "flatpkg"]:
            monkeypatch.delitem(sys.modules, name)
        importlib.invalidate_caches()

    return make


BASE = {
    "__init__.py": "",
    "core.py": "from .util import helper\nVALUE = 1\n",
    "util.py": "def helper():\n    return 2\n",
    "lazy.py": "def resolve():\n    return 3\n",
    "sub/__init__.py": "",
    "sub/entry.py": """\
        from __future__ import annotations

        import os  # not from the package: left alone

        from ..core import VALUE
        from flatpkg.util import helper

        LOCATION = None


        def run():
            # A function-level import, as in an error path.
            from ..lazy import resolve

            return VALUE + helper() + resolve()
        """,
}


def test_flattened_modules_import_each_other_as_siblings(tmp_path, make_package):
    make_package(BASE)
    flat_names = collect_modules("flatpkg.sub.entry")
    assert flat_names == {"flatpkg.sub.entry": "generate", "flatpkg.core": "core", "flatpkg.util": "util",
                          "flatpkg.lazy": "lazy"}
    out = tmp_path / "out" / "custom_generate"
    out.mkdir(parents=True)
    for module_name, flat in flat_names.items():
        constants = {"LOCATION": "org/name"} if flat == "generate" else None
        (out / f"{flat}.py").write_text(flatten_module(module_name, flat_names, constants))

    entry = (out / "generate.py").read_text()
    assert "from .core import VALUE\nfrom .util import helper\n" in entry
    assert "    from .lazy import resolve\n" in entry and "LOCATION = 'org/name'\n" in entry
    assert "import os  # not from the package: left alone" in entry
    # transformers' loader finds every sibling by following the rewritten imports.
    found = {path.rsplit("/", 1)[-1] for path in get_relative_import_files(str(out / "generate.py"))}
    assert found == {"core.py", "util.py", "lazy.py"}

    # And the folder runs as a package of its own.
    (out / "__init__.py").write_text("")
    sys.path.insert(0, str(out.parent))
    try:
        module = importlib.import_module("custom_generate.generate")
        assert module.run() == 6 and module.LOCATION == "org/name"
    finally:
        sys.path.remove(str(out.parent))
        for name in [name for name in sys.modules if name.split(".")[0] == "custom_generate"]:
            del sys.modules[name]


@pytest.mark.parametrize(
    "statement, message",
    [
        ("from .. import core", "cannot be followed"),
        ("from flatpkg import core", "cannot be followed"),
        ("import flatpkg.core", "cannot be flattened"),
    ],
)
def test_unfollowable_imports_are_refused(make_package, statement, message):
    make_package({**BASE, "sub/entry.py": statement + "\n"})
    with pytest.raises(ImportError, match=message):
        collect_modules("flatpkg.sub.entry")


def test_flat_name_clash_is_refused(make_package):
    make_package({**BASE, "sub/util.py": "X = 1\n", "sub/entry.py": "from .util import X\nfrom ..util import helper\n"})
    with pytest.raises(ImportError, match="would both become `util.py`"):
        collect_modules("flatpkg.sub.entry")
