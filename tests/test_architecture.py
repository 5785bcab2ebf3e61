"""The layout README.md's Architecture section draws: imports run only downward, no circles, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Bottom to top. A module may import from lower layers and from its own unit; units of one layer are independent.
LAYERS = [
    ["teaming", "teaming._validation", "teaming._plotting", "teaming.templates"],  # "teaming": the package face
    ["teaming.preprocess"],  # how any photo becomes a model's input
    ["teaming.api", "teaming.decode"],
    ["teaming.data", "teaming.labels", "teaming.confidence", "teaming.client", "teaming.items"],
    ["teaming.datasets", "teaming.probes", "teaming.crowd"],  # image sets, the unfamiliar probes, simulated people
    ["teaming.model"],
    ["teaming.analysis", "teaming.policy"],
    ["teaming.team"],
    ["teaming.report", "teaming.importer"],
    ["teaming.ops"],
    ["teaming.cli"],
    ["service"],
]


def modules() -> dict[str, Path]:
    found = {}
    for package in ("teaming", "service"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def unit(module: str) -> str:
    """The layer unit a module belongs to: the longest entry of LAYERS that names it or its package."""
    units = [u for layer in LAYERS for u in layer if module == u or (u != "teaming" and module.startswith(u + "."))]
    if not units:
        raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: place it")
    return max(units, key=len)


def level(u: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if u in layer)


def imports(path: Path, known: set[str]) -> set[str]:
    """Project modules a file imports (at any depth: lazy imports inside functions count too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, set(mods)) - {m} for m, p in mods.items()}


def test_imports_run_only_downward():
    wrong = []
    for a, targets in graph().items():
        for b in targets:
            ua, ub = unit(a), unit(b)
            if ua != ub and level(ua) <= level(ub):
                wrong.append(f"{a} -> {b}")
    assert wrong == [], "imports that run sideways or up: " + ", ".join(sorted(wrong))


def test_no_import_circles():
    g = graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join(path[path.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])


def test_modules_stay_small():
    sizes = {m: len(p.read_text().splitlines()) for m, p in modules().items()}
    assert {m: n for m, n in sizes.items() if n > 400} == {}
    assert sizes["service.app"] < 200  # the service entry module: the class, classify, the batch


def test_functions_stay_short():
    """Every function reads at once: 60 lines at most from `def` to its last line (a command's table of options
    included), in the library and the service."""
    long = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if (lines := node.end_lineno - node.lineno + 1) > 60:
                    long[f"{name}.{node.name}"] = lines
    assert long == {}


def test_the_library_never_imports_the_service():
    assert not [
        a for a, targets in graph().items() if a.startswith("teaming") and any(t.startswith("service") for t in targets)
    ]


def test_the_policies_import_without_torch():
    """Fitting and applying a policy needs numpy and scikit-learn, not torch (only L2D trains a head with it)."""
    import subprocess
    import sys

    code = "import sys, teaming.policy, teaming.items; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
