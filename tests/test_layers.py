"""The package's layers: a lower layer never imports a higher one, and no module imports itself in a circle.

Every module of `xpr_deploy` is parsed with `ast`; every import counts, at module level and inside
functions, with relative forms (`from . import x`, `from ..a import b`) resolved. Imports under
`if TYPE_CHECKING:` are left out (they never run). `from pkg import name` is an import of
`pkg.name` when that is a module of the package, else of `pkg`. An import of a module the package
does not have, or a module missing from the table below, fails too: it cannot be placed in a layer.
"""

from __future__ import annotations

import ast
import fnmatch
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PACKAGE = "xpr_deploy"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: low to high; a module may import its own layer or a lower one. A name ending in ".*" covers the
#: package itself and everything below it; other patterns are fnmatch globs on the dotted name.
LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (0, ("xpr_deploy", "xpr_deploy.errors", "xpr_deploy.config", "xpr_deploy.io", "xpr_deploy.version")),
    (0, ("xpr_deploy.train.config",)),
    (1, ("xpr_deploy.data.*",)),
    (2, ("xpr_deploy.model.*",)),
    (3, ("xpr_deploy.train.*",)),
    (4, ("xpr_deploy.bundle.*",)),
    (5, ("xpr_deploy.trt_engine.*", "xpr_deploy.export.*")),
    (6, ("xpr_deploy.runners.*",)),
    (
        7,
        (
            "xpr_deploy.predict",
            "xpr_deploy.pipeline",
            "xpr_deploy.results",
            "xpr_deploy.validate.*",
            "xpr_deploy.bench.*",
            "xpr_deploy.triton",
            "xpr_deploy.heatmap",
            "xpr_deploy.demo_report",
            "xpr_deploy.doctor",
            "xpr_deploy.serve*",
            "xpr_deploy.dicom_out.*",
            "xpr_deploy.dicomweb.*",
            "xpr_deploy.regions",
        ),
    ),
    (8, ("xpr_deploy.demo", "xpr_deploy.node.*", "xpr_deploy.viewer")),
    (9, ("xpr_deploy.cli.*",)),
]
#: modules whose own imports are not checked (the package __init__ only re-exports, lazily)
EXEMPT = frozenset({"xpr_deploy"})


def layer_of(module: str) -> int | None:
    """The layer of a dotted module name; exact names win over patterns, longer patterns over shorter."""
    best: tuple[int, int] | None = None  # (specificity, layer)
    for layer, patterns in LAYERS:
        for pat in patterns:
            if pat.endswith(".*"):
                base = pat[:-2]
                hit = module == base or module.startswith(base + ".")
                score = len(base)
            elif any(c in pat for c in "*?["):
                hit = fnmatch.fnmatchcase(module, pat)
                score = len(pat.rstrip("*"))
            else:
                hit = module == pat
                score = 10_000  # an exact name beats every pattern
            if hit and (best is None or score > best[0]):
                best = (score, layer)
    return None if best is None else best[1]


# ---- parsing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    importer: str
    line: int
    target: str  # a module of the package, or the unresolved dotted name


@dataclass(frozen=True)
class Source:
    module: str
    is_package: bool  # an __init__.py: relative imports resolve from the module itself
    text: str
    path: str


def module_name(rel: Path) -> tuple[str, bool]:
    """('xpr_deploy.data.dicom', False) for xpr_deploy/data/dicom.py; packages for __init__.py."""
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def read_package(root: Path = ROOT) -> dict[str, Source]:
    out: dict[str, Source] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        if "__pycache__" in rel.parts:
            continue
        name, is_pkg = module_name(rel)
        out[name] = Source(name, is_pkg, path.read_text(encoding="utf-8"), str(rel))
    return out


def sources_from_texts(texts: Mapping[str, str]) -> dict[str, Source]:
    """A synthetic package: {'xpr_deploy/data/foo.py': source text, ...}."""
    out: dict[str, Source] = {}
    for rel, text in texts.items():
        name, is_pkg = module_name(Path(rel))
        out[name] = Source(name, is_pkg, text, rel)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement at any depth, except in the body of `if TYPE_CHECKING:`."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # the else branch does run
            continue
        stack.extend(ast.iter_child_nodes(node))


def known_names(modules: Mapping[str, Source]) -> set[str]:
    """The modules plus the namespace packages above them (folders without an __init__.py)."""
    names = set(modules)
    for name in modules:
        parts = name.split(".")
        names.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return names


def imports_of(src: Source, modules: Mapping[str, Source]) -> list[Import]:
    """The package-internal imports of one module, resolved to modules of the package."""
    tree = ast.parse(src.text, filename=src.path)
    known = known_names(modules)
    found: list[Import] = []  # one per (line, target): `from m import a, b` is one import of m
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    found.append(Import(src.module, node.lineno, alias.name))
            continue
        if node.level:
            base = src.module.split(".") if src.is_package else src.module.split(".")[:-1]
            if node.level - 1 > len(base) - 1:
                raise AssertionError(f"{src.path}:{node.lineno}: relative import goes above the package")
            base = base[: len(base) - (node.level - 1)]
            stem = ".".join(base + ([node.module] if node.module else []))
        else:
            stem = node.module or ""
        if stem != PACKAGE and not stem.startswith(PACKAGE + "."):
            continue
        for alias in node.names:
            sub = f"{stem}.{alias.name}"  # `from pkg import mod` imports pkg.mod, `from mod import name` mod
            found.append(Import(src.module, node.lineno, sub if sub in known else stem))
    return sorted(set(found), key=lambda i: (i.line, i.target))


# ---- the checks ---------------------------------------------------------------------------------


def layer_violations(modules: Mapping[str, Source]) -> list[str]:
    """One sentence per module missing from the table, unknown import, or import of a higher layer."""
    problems: list[str] = []
    for name, src in sorted(modules.items()):
        own = layer_of(name)
        if own is None:
            problems.append(f"{name} ({src.path}) is in no layer: add it to the layer table in tests/test_layers.py")
            continue
        if name in EXEMPT:
            continue
        known = known_names(modules)
        for imp in imports_of(src, modules):
            if imp.target not in known:
                problems.append(
                    f"{name} ({src.path}:{imp.line}) imports {imp.target}, which is no module of the package"
                )
                continue
            theirs = layer_of(imp.target)
            if theirs is not None and theirs > own:
                problems.append(
                    f"{name} (layer {own}, {src.path}:{imp.line}) imports {imp.target} (layer {theirs}): "
                    "a lower layer must not import a higher one"
                )
    return problems


def import_graph(modules: Mapping[str, Source]) -> dict[str, dict[str, int]]:
    """module -> {imported module: first line}; exempt modules' own imports and self-imports left out."""
    graph: dict[str, dict[str, int]] = {name: {} for name in known_names(modules)}
    for name, src in modules.items():
        if name in EXEMPT:
            continue
        for imp in imports_of(src, modules):
            if imp.target in graph and imp.target != name:
                line = graph[name].get(imp.target)
                graph[name][imp.target] = imp.line if line is None else min(line, imp.line)
    return graph


def _strongly_connected(graph: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def _cycle_in(comp: list[str], graph: Mapping[str, Mapping[str, int]]) -> list[str]:
    """One concrete cycle through the first module of a strongly connected component (BFS)."""
    members = set(comp)
    start = comp[0]
    prev: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node]):
            if nxt not in members:
                continue
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if nxt not in prev:
                prev[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start} in {comp}")  # pragma: no cover - Tarjan said there is


def import_cycles(modules: Mapping[str, Source]) -> list[str]:
    """One sentence per import cycle (strongly connected component), naming each edge with its line."""
    graph = import_graph(modules)
    problems = []
    for comp in _strongly_connected(graph):
        cyc = _cycle_in(comp, graph)
        steps = " -> ".join(f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(cyc))
        problems.append(f"import cycle among {', '.join(comp)}: {steps} -> {cyc[-1]}")
    return problems


# ---- tests --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package() -> dict[str, Source]:
    mods = read_package()
    assert "xpr_deploy.model.xpruning" in mods and "xpr_deploy.data.dicom" in mods
    return mods


def test_no_lower_layer_imports_a_higher_one(package: dict[str, Source]) -> None:
    problems = layer_violations(package)
    assert not problems, "layer violations:\n" + "\n".join(problems)


def test_no_import_cycles(package: dict[str, Source]) -> None:
    problems = import_cycles(package)
    assert not problems, "import cycles:\n" + "\n".join(problems)


def test_checker_reports_a_data_module_importing_the_cli() -> None:
    mods = sources_from_texts(
        {
            "xpr_deploy/__init__.py": "",
            "xpr_deploy/cli.py": "def main() -> None: ...\n",
            "xpr_deploy/errors.py": "",
            "xpr_deploy/data/__init__.py": "",
            "xpr_deploy/data/foo.py": "from ..errors import X\n\n\ndef f():\n    from .. import cli\n",
        }
    )
    problems = layer_violations(mods)
    assert len(problems) == 1, problems
    assert "xpr_deploy.data.foo" in problems[0]
    assert "xpr_deploy/data/foo.py:5" in problems[0]
    assert "imports xpr_deploy.cli (layer 9)" in problems[0]


@pytest.mark.parametrize(
    "stmt",
    [
        "import xpr_deploy.cli",
        "from xpr_deploy import cli",
        "from xpr_deploy.cli import main",
        "from ..cli import main",
        "from .. import cli",
    ],
)
def test_checker_resolves_every_import_form(stmt: str) -> None:
    mods = sources_from_texts(
        {
            "xpr_deploy/__init__.py": "",
            "xpr_deploy/cli.py": "",
            "xpr_deploy/data/__init__.py": "",
            "xpr_deploy/data/foo.py": f"import os\n{stmt}\n",
        }
    )
    assert [p.split(":")[1].split(")")[0] for p in layer_violations(mods)] == ["2"]


def test_checker_leaves_out_type_checking_imports_and_reports_unknown_modules() -> None:
    mods = sources_from_texts(
        {
            "xpr_deploy/__init__.py": "from .cli import main\n",  # exempt
            "xpr_deploy/cli.py": "",
            "xpr_deploy/data/__init__.py": "from .foo import f\n",
            "xpr_deploy/data/foo.py": (
                "import typing\nfrom typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from ..cli import main\n"
                "if typing.TYPE_CHECKING:\n    import xpr_deploy.cli\nelse:\n    from .gone import g\n"
            ),
            "xpr_deploy/stray.py": "",
        }
    )
    problems = layer_violations(mods)
    assert len(problems) == 2, problems
    assert "xpr_deploy/data/foo.py:8) imports xpr_deploy.data.gone, which is no module" in problems[0]
    assert "xpr_deploy.stray" in problems[1] and "add it to the layer table" in problems[1]


def test_checker_reports_a_cycle_with_its_lines() -> None:
    mods = sources_from_texts(
        {
            "xpr_deploy/__init__.py": "",
            "xpr_deploy/model/__init__.py": "",
            "xpr_deploy/model/a.py": "from . import b\n",
            "xpr_deploy/model/b.py": "\n\ndef f():\n    from .c import x\n",
            "xpr_deploy/model/c.py": "import xpr_deploy.model.a\n",
            "xpr_deploy/model/d.py": "from .a import y\n",  # imports into the cycle, is not part of it
        }
    )
    problems = import_cycles(mods)
    assert problems == [
        "import cycle among xpr_deploy.model.a, xpr_deploy.model.b, xpr_deploy.model.c: "
        "xpr_deploy.model.a (line 1) -> xpr_deploy.model.b (line 4) -> xpr_deploy.model.c (line 1) "
        "-> xpr_deploy.model.a"
    ]


def test_layer_table() -> None:
    assert layer_of("xpr_deploy.train.config") == 0
    assert layer_of("xpr_deploy.train.loop") == 3
    assert layer_of("xpr_deploy.data") == 1
    assert layer_of("xpr_deploy.bench") == layer_of("xpr_deploy.bench.gpu") == 7
    assert layer_of("xpr_deploy.serve") == layer_of("xpr_deploy.serve.http") == 7
    assert layer_of("xpr_deploy.cli") == layer_of("xpr_deploy.cli.train") == 9
    assert layer_of("xpr_deploy.demo") == 8
    assert layer_of("xpr_deploy.nothing") is None


# ---- moved down a layer: random-weight models (validate.py -> model/xpruning.py) ----------------


def _validate_random_model(config: Any, seed: int) -> Any:
    """The recipe `xpr_deploy.validate.random_model` / `_seeded` used (commit b00f130), verbatim."""
    import torch

    from xpr_deploy.model.xpruning import build_model

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build_model(config).eval()
    finally:
        torch.random.set_rng_state(state)


def test_random_model_matches_validates_recipe_bit_for_bit_and_leaves_the_rng_alone() -> None:
    import torch

    from xpr_deploy.config import get_config
    from xpr_deploy.model.xpruning import random_model

    tiny = get_config("tiny")
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    a = random_model(tiny, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    expected_next = torch.rand(4)
    torch.random.set_rng_state(before)
    b = _validate_random_model(tiny, 3)
    assert not a.training and not b.training
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    torch.random.set_rng_state(before)
    random_model("tiny", seed=3)
    assert torch.equal(torch.rand(4), expected_next)  # the caller's random stream is not disturbed
    c = random_model(tiny, seed=4).state_dict()
    assert not torch.equal(c["head.fc1.weight"], sa["head.fc1.weight"])
