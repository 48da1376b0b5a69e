"""The architecture, enforced by reading src/ (issue 24).

* Layers import downward only: foundation < binding < stores < cache < servers < tools.
* Reads of a private member another file defines: at most 10, all in ``sesscache/_compat.py``
  (the one place for pyOpenSSL's, CPython's and asyncio's private parts). Reads of
  ``obj._x`` at all (``obj`` not ``self``/``cls``): no more than today.
* ``getattr``/``hasattr`` probes of a store's capabilities outside
  ``sesscache/stores/capabilities.py``: none (a store's optional methods are asked once,
  there).
* ``os.register_at_fork`` outside ``sesscache/_fork.py``: none (one registry).
* A context passed to ``SessionCache.attach`` is resolved once.

Run with ``-s`` to see the counts.
"""
from __future__ import annotations

import ast
import ssl
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "sesscache"

#: Lowest first. A module belongs to the layer of the longest prefix that names it.
LAYERS: List[Tuple[str, Tuple[str, ...]]] = [
    ("foundation", ("sesscache.errors", "sesscache._burstlog", "sesscache._compat", "sesscache._id_stamps",
                    "sesscache.session_ids", "sesscache._certs", "sesscache._call_times")),
    # sealing: the Python side of csrc/seal.c (its format's numbers, the keys handed to C).
    ("binding", ("sesscache._binding", "sesscache._sesscache_cffi", "sesscache._sesscache_testing_cffi",
                 "sesscache._fork", "sesscache.session", "sesscache.contexts", "sesscache.callbacks",
                 "sesscache.clienthello", "sesscache.testing", "sesscache.sealing")),
    ("stores", ("sesscache.stores",)),
    ("cache", ("sesscache.cache", "sesscache.client_cache", "sesscache.ticket_keys")),
    # metrics: beside the servers (the integrations serve /metrics), above the cache it reads.
    ("servers", ("sesscache.aio", "sesscache.integrations", "sesscache.metrics")),
    ("tools", ("sesscache.cli", "sesscache.cli_keys", "sesscache.check", "sesscache.__main__", "sesscache")),
]
COMPAT = "sesscache/_compat.py"
CAPABILITIES = "sesscache/stores/capabilities.py"
FORK_REGISTRY = "sesscache/_fork.py"
#: Method and attribute names of the store protocol and its optional capabilities.
STORE_CAPABILITY_NAMES = {"get", "set", "delete", "pop", "close", "write_many", "wait_for_write",
                          "compare_and_set", "c_tables", "wait_for_key", "forget_local", "health_domain",
                          "evictions", "describe", "kind", "remote", "_fast_tables",
                          "_fast_table_is_partial", "_fast_policy_made"}
#: Underscored names that are public API (namedtuple's).
PUBLIC_UNDERSCORED = {"_replace", "_asdict", "_fields", "_make"}
#: Reads of obj._x in src/ when this test was written (91 on main at e90dd66), plus
#: sys._getframe, which gunicorn's ssl_context_hook reads, and asyncio._get_running_loop
#: (both in _compat since the merges), and the client offer's C trampoline reaching its
#: cache's two handlers in the same file (client_cache.py).
MOST_PRIVATE_READS = 17
MOST_FOREIGN_PRIVATE_READS = 10


def _modules() -> Iterator[Tuple[str, str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), str(path.relative_to(SRC)), ast.parse(path.read_text(), str(path))


def _layer(module: str) -> int:
    best, found = -1, None
    for index, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    assert found is not None, f"{module} is in no layer: add it to LAYERS in {__file__}"
    return found


def _imports(module: str, relpath: str, tree: ast.Module) -> Set[str]:
    package = module if relpath.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("sesscache"):
                continue
            if node.module is None or target == "sesscache":  # from . import a, b: modules or names
                for alias in node.names:
                    candidate = f"{target}.{alias.name}"
                    found.add(candidate if _is_module(candidate) else target)
            else:
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("sesscache"))
    return found


def _is_module(name: str) -> bool:
    path = SRC.joinpath(*name.split("."))
    return (path.with_suffix(".py").exists() or (path / "__init__.py").exists()
            or any(path.parent.glob(path.name + ".*.so")) or name.startswith("sesscache._sesscache_"))


def _defined_names(tree: ast.Module) -> Set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__
    return names


def _private_reads() -> Tuple[List[str], List[str]]:
    """(every obj._x, those whose _x no line of the same file defines), as 'path:line expr'."""
    every, foreign = [], []
    for _module, relpath, tree in _modules():
        own = _defined_names(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            name = node.attr
            if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
                continue
            if name in PUBLIC_UNDERSCORED:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            where = f"{relpath}:{node.lineno} {ast.unparse(node)}"
            every.append(where)
            if name not in own:
                foreign.append(where)
    return every, foreign


def _calls(tree: ast.Module) -> Iterator[ast.Call]:
    return (node for node in ast.walk(tree) if isinstance(node, ast.Call))


def test_layers_import_downward_only():
    upward = []
    for module, relpath, tree in _modules():
        mine = _layer(module)
        for target in sorted(_imports(module, relpath, tree)):
            if _layer(target) > mine:
                upward.append(f"{module} ({LAYERS[mine][0]}) imports {target} ({LAYERS[_layer(target)][0]})")
    assert upward == []


def test_integrations_import_no_other_integration():
    found = []
    for module, relpath, tree in _modules():
        if not module.startswith("sesscache.integrations."):
            continue
        for target in _imports(module, relpath, tree):
            # The underscored modules are what the servers' modules share (a cache per
            # worker, the store tried at start, the log routing), not integrations.
            if target.startswith("sesscache.integrations.") and target != module and not (
                    target.rsplit(".", 1)[1].startswith("_")):
                found.append(f"{module} imports {target}")
    assert found == []


def test_private_members_of_other_files_are_read_only_in_the_compat_module():
    every, foreign = _private_reads()
    print(f"\nreads of obj._x in src/: {len(every)}; of a member another file defines: {len(foreign)}")
    outside = [where for where in foreign if not where.startswith(COMPAT + ":")]
    assert outside == [], "read another file's private members through sesscache._compat or a public name"
    assert len(foreign) <= MOST_FOREIGN_PRIVATE_READS, foreign
    assert len(every) <= MOST_PRIVATE_READS, every


def test_private_names_are_imported_only_by_the_compat_module():
    """``from x import _name`` (not a module) is a private read too."""
    found = []
    for module, relpath, tree in _modules():
        package = module if relpath.endswith("__init__.py") else module.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                name = alias.name
                if (name.startswith("_") and not name.startswith("__")
                        and not _is_module(f"{source}.{name}")):
                    found.append(f"{relpath}:{node.lineno} from {source} import {name}")
    print(f"\nprivate names imported: {found}")
    assert [f for f in found if not f.startswith(COMPAT + ":")] == []


def test_store_capabilities_are_asked_only_in_the_capability_module():
    probes = []
    for _module, relpath, tree in _modules():
        for call in _calls(tree):
            if (isinstance(call.func, ast.Name) and call.func.id in ("getattr", "hasattr")
                    and len(call.args) >= 2 and isinstance(call.args[1], ast.Constant)
                    and call.args[1].value in STORE_CAPABILITY_NAMES):
                probes.append(f"{relpath}:{call.lineno} {ast.unparse(call)}")
    print(f"\ncapability probes: {len(probes)}")
    assert [p for p in probes if not p.startswith(CAPABILITIES + ":")] == [], \
        "ask a store's capabilities through sesscache.stores.capabilities"


def test_at_fork_hooks_go_through_the_one_registry():
    registrations = []
    for _module, relpath, tree in _modules():
        for call in _calls(tree):
            func = call.func
            if isinstance(func, ast.Attribute) and func.attr == "register_at_fork":
                registrations.append(f"{relpath}:{call.lineno}")
    print(f"\nos.register_at_fork calls: {registrations}")
    assert [r for r in registrations if not r.startswith(FORK_REGISTRY + ":")] == [], \
        "register at-fork hooks with sesscache._fork.renew_in_child / at_child"
    assert len(registrations) == 1


def test_attach_resolves_its_context_once(monkeypatch, certs):
    """The attach path goes down only: cache -> binding, with the context resolved once."""
    from sesscache import SessionCache
    from sesscache._binding import find_context

    resolved: Dict[str, int] = {"stdlib": 0}
    real = find_context._bind_stdlib

    def counting(context):
        resolved["stdlib"] += 1
        return real(context)

    monkeypatch.setattr(find_context, "_bind_stdlib", counting)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_pem)
    context.options |= ssl.OP_NO_TICKET
    cache = SessionCache()
    cache.attach(context)
    assert resolved["stdlib"] == 1
    cache.close()


@pytest.mark.parametrize("layer", [name for name, _ in LAYERS])
def test_every_layer_has_modules(layer):
    names = [module for module, _, _ in _modules() if LAYERS[_layer(module)][0] == layer]
    assert names, f"no module in the {layer} layer"
