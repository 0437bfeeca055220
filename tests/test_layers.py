"""Imports only go down the layers (docs/architecture.md, "Layers").

Each module of the package has a layer; a module may import its own layer and those below it.
Imports under ``if TYPE_CHECKING:`` are types only and always allowed. The few imports that go
up are listed in ``UPWARD`` with the reason they may; an import inside a function is no excuse
by itself. Read with ``ast``: nothing is imported to check it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "authlayer"

# L5 adapters, L4 provider, L3 config and the registry, L2 flows, L1 the edges (one HTTP
# boundary, the token exchange, stores, the leaf modules of config), L0 values.
LAYERS: dict[str, int] = {
    **dict.fromkeys(("authlayer", "authlayer.__main__", "authlayer.cli", "authlayer.auth",
                     "authlayer.azure_credential", "authlayer.aio", "authlayer.demo",
                     "authlayer.extend", "authlayer._aiohttp", "authlayer.pytest_plugin"), 5),
    **dict.fromkeys(("authlayer.provider", "authlayer._singleflight"), 4),
    **dict.fromkeys(("authlayer.config", "authlayer.config._find", "authlayer.config._layers",
                     "authlayer.config._build", "authlayer.registry", "authlayer.chains"), 3),
    "authlayer.flows": 2,  # and every module in it
    **dict.fromkeys(("authlayer.oauth", "authlayer._http", "authlayer._actions",
                     "authlayer._loopback",
                     "authlayer._browser", "authlayer._process", "authlayer.store",
                     "authlayer.filecache", "authlayer.stores", "authlayer.config._keys",
                     "authlayer.config._sources"), 1),
    "authlayer.emulator": 1,  # a tool beside the library: it needs only values (jwt, hosts)
    **dict.fromkeys(("authlayer.schema", "authlayer.profile", "authlayer.token",
                     "authlayer.errors", "authlayer.hosts", "authlayer.jwt",
                     "authlayer.certificate", "authlayer._version", "authlayer._fileperms",
                     "authlayer._entrypoints", "authlayer._log", "authlayer._record"), 0),
}

# (importer, imported): why this import may go up.
UPWARD = {
    ("authlayer.profile", "authlayer.registry"):
        "a SecretSource finds its kind's spec by name, and profile.FLOWS names the built-in "
        "flows; the registry imports nothing but errors when it is loaded",
    ("authlayer.config._sources", "authlayer.registry"):
        "secret sources that plugins add are listed and loaded by the registry",
    ("authlayer.config._sources", "authlayer.config"):
        "inside the borrowed-identity source only (client_assertion = { profile = NAME }): it "
        "checks the other profile when the borrowing one is loaded",
    ("authlayer.config._sources", "authlayer.provider"):
        "inside the borrowed-identity source only: its assertion is another profile's access "
        "token, which the provider gets (and caches) when a new token is needed",
    ("authlayer.profile", "authlayer.filecache"):
        "inside installation_salt() only: the salt for inline secrets lives next to the "
        "token cache",
}

# Rules of their own, beyond the layers: (importer prefix, imported prefix) never, except.
NEVER = [
    ("authlayer.flows", "authlayer.config", "flows get their profile ready-made"),
    ("authlayer.flows", "authlayer.provider", "flows know nothing of caching"),
    ("authlayer.flows", "authlayer.registry", "flows are what the registry lists"),
    ("authlayer.oauth", "authlayer.flows", "the exchange serves every flow alike"),
]
NEVER_EXCEPT = {
    ("authlayer.flows._workload_env", "authlayer.config._keys"):
        "the AZURE_* variables are checked like the keys of a profile (a leaf module)",
}
# _http is transport only: what it may import at all.
HTTP_IMPORTS = {"authlayer.errors", "authlayer._version", "authlayer.hosts", "authlayer.token",
                "authlayer._log", "authlayer._actions"}


class Import(NamedTuple):
    importer: str
    imported: str
    line: int
    typing_only: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int:
    name = module
    while name and name != "authlayer":  # the root's layer is its own, not its modules'
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    if module == "authlayer":
        return LAYERS[module]
    raise KeyError(module)


def _submodule(package: str, name: str) -> bool:
    base = PACKAGE.parent.joinpath(*package.split("."), name)
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _walk(node: ast.AST, module: str, package: str, typing_only: bool) -> Iterator[Import]:
    for child in ast.iter_child_nodes(node):
        only = typing_only or (isinstance(child, ast.If)
                               and "TYPE_CHECKING" in ast.unparse(child.test))
        if isinstance(child, ast.ImportFrom):
            if child.level:
                base = package.split(".")
                base = base[:len(base) - child.level + 1]
                target = ".".join(base + ([child.module] if child.module else []))
            else:
                target = child.module or ""
            if target == "authlayer" or target.startswith("authlayer."):
                for alias in child.names:  # `from . import jwt` imports a module
                    yield Import(module, f"{target}.{alias.name}"
                                 if _submodule(target, alias.name) else target,
                                 child.lineno, only)
        elif isinstance(child, ast.Import):
            for alias in child.names:
                if alias.name.startswith("authlayer"):
                    yield Import(module, alias.name, child.lineno, only)
        yield from _walk(child, module, package, only)


def _imports() -> Iterator[Import]:
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        yield from _walk(tree, module, package, False)


IMPORTS = [i for i in _imports() if i.importer != i.imported]


def test_every_module_has_a_layer() -> None:
    unplaced = []
    for path in sorted(PACKAGE.rglob("*.py")):
        try:
            _layer(_module_name(path))
        except KeyError:
            unplaced.append(_module_name(path))
    assert unplaced == [], "give each new module its layer in LAYERS (and docs/architecture.md)"


def test_imports_only_go_down_the_layers() -> None:
    upward = [
        f"{i.importer}:{i.line} imports {i.imported} "
        f"(layer {_layer(i.importer)} -> {_layer(i.imported)})"
        for i in IMPORTS
        if not i.typing_only and _layer(i.imported) > _layer(i.importer)
        and (i.importer, i.imported) not in UPWARD
    ]
    assert upward == []


def test_the_upward_exceptions_are_still_needed() -> None:
    found = {(i.importer, i.imported) for i in IMPORTS if not i.typing_only}
    assert set(UPWARD) <= found, "remove the exceptions that no import needs any more"


@pytest.mark.parametrize(("importer", "imported", "why"), NEVER)
def test_module_groups_that_never_import_each_other(importer: str, imported: str,
                                                    why: str) -> None:
    def under(module: str, prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    wrong = [
        f"{i.importer}:{i.line} imports {i.imported}"
        for i in IMPORTS
        if under(i.importer, importer) and under(i.imported, imported)
        and (i.importer, i.imported) not in NEVER_EXCEPT
    ]
    assert wrong == [], why


def test_http_is_transport_only() -> None:
    imported = {i.imported for i in IMPORTS if i.importer == "authlayer._http"}
    assert imported <= HTTP_IMPORTS
    # The actions and their drivers hand each request to _http, and know nothing else (the
    # actions are records, a leaf that imports nothing).
    assert {i.imported for i in IMPORTS if i.importer == "authlayer._actions"} == {
        "authlayer._http", "authlayer._record"}


def test_nothing_below_the_adapters_imports_the_package_root() -> None:
    """The root re-exports the adapters; ``__version__`` is in ``_version``."""
    assert [f"{i.importer}:{i.line}" for i in IMPORTS
            if i.imported == "authlayer" and _layer(i.importer) < 5] == []


def test_the_checker_sees_imports() -> None:
    """The test would pass vacuously if it saw no imports: it sees the ones it must."""
    pairs = {(i.importer, i.imported) for i in IMPORTS}
    assert ("authlayer.oauth", "authlayer._http") in pairs
    assert ("authlayer.flows.device_code", "authlayer.oauth") in pairs
    assert ("authlayer.flows.azure_cli", "authlayer.jwt") in pairs  # from .. import jwt
    assert ("authlayer.schema", "authlayer._http") in {
        (i.importer, i.imported) for i in IMPORTS if i.typing_only}
