"""tinydiff's imports go downward only: the package is a stack of layers, and no module imports from a layer above
its own or takes part in an import cycle (imports inside functions included -- a late import is still an arrow).

A new module must be placed in one of the layers below; the test says so when one is missing.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tinydiff"

# Bottom to top. A module may import from its own layer (without a cycle) and from the layers below it.
LAYERS: list[tuple[str, set[str]]] = [
    ("foundations: tensors, schedules, text tokens, processes", {"tensors", "schedules", "tokenizer", "distributed"}),
    ("data, networks and the forward process", {"data", "models", "diffusion", "latent"}),
    ("checkpoint files and the trained models they hold", {"checkpoint", "pretrained"}),
    ("the core: losses, samplers, exact denoisers, measures", {"losses", "samplers", "oracle", "langevin",
                                                               "metrics", "memorisation"}),
    ("methods built on the core", {"solvers", "flow", "likelihood", "guidance", "editing", "distill", "adapt",
                                   "text_to_image", "superres", "personalise", "prompt_editing", "train_state",
                                   "train"}),
    ("samplers by name and evaluation", {"registry", "evaluation", "video"}),
    ("figures: drawing only", {"plot", "animation"}),
    ("demos: the widgets' pictures, sampled and then drawn", {"demos"}),
    ("widgets, exercise checks and the scripts' command line", {"widgets", "checks", "cli"}),
]

DRAWING_ONLY = {"plot", "animation"}
"""Modules that draw what they are given and run no network or sampler (a demo samples, then hands them arrays)."""
RUNS_NOTHING = {"tensors", "schedules", "data", "diffusion", "plot"}
"""What a drawing module may import: foundations, data and the forward process in closed form -- no module with a
network, a sampler or a measure computed by a network (metrics runs a classifier)."""


def module_of(path: Path) -> str:
    """The unit a file belongs to: ``samplers`` for samplers.py, ``models`` for anything in models/."""
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def imports() -> dict[str, set[str]]:
    """unit -> the other tinydiff units it imports (anywhere in its files)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        unit, folders = module_of(path), path.relative_to(PACKAGE).parts[:-1]
        if unit == "__init__":
            continue
        graph.setdefault(unit, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                if isinstance(node, ast.Import):
                    graph[unit] |= {a.name.split(".")[1] for a in node.names if a.name.startswith("tinydiff.")}
                continue
            if node.level == 0:
                parts = node.module.split(".") if node.module else []
                if parts[:1] != ["tinydiff"]:
                    continue
                target = parts[1:] or [a.name for a in node.names]
            else:
                base = list(folders)[: len(folders) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [a.name for a in node.names])
            if target and target[0] != unit:
                graph[unit].add(target[0])
    return graph


def layer_of() -> dict[str, int]:
    return {name: i for i, (_, names) in enumerate(LAYERS) for name in names}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once, as the list of units around it."""
    found, state = [], {}

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = "open"
        for other in sorted(graph.get(unit, ())):
            if state.get(other) == "open":
                found.append(path[path.index(other):] + [other])
            elif other not in state:
                visit(other, path + [other])
        state[unit] = "done"

    for unit in sorted(graph):
        if unit not in state:
            visit(unit, [unit])
    return found


def test_every_module_has_a_layer():
    missing = sorted(set(imports()) - set(layer_of()))
    assert not missing, f"place {missing} in a layer of tests/test_layers.py (LAYERS)"


def test_no_module_imports_from_a_layer_above_its_own():
    layer = layer_of()
    upward = [f"{unit} ({LAYERS[layer[unit]][0]}) imports {other} ({LAYERS[layer[other]][0]})"
              for unit, others in imports().items() for other in sorted(others)
              if unit in layer and other in layer and layer[other] > layer[unit]]
    assert not upward, "imports that run up the layers:\n  " + "\n  ".join(upward)


def test_no_import_cycles():
    found = cycles(imports())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_drawing_modules_import_nothing_that_runs_a_network():
    graph = imports()
    found = {unit: sorted(graph[unit] - RUNS_NOTHING) for unit in sorted(DRAWING_ONLY) if graph[unit] - RUNS_NOTHING}
    assert not found, f"drawing modules import modules that run networks or samplers (move that work to demos): {found}"


def test_the_checks_catch_an_upward_import_and_a_cycle():
    graph = {"samplers": {"solvers"}, "solvers": {"samplers"}}
    assert cycles(graph) == [["samplers", "solvers", "samplers"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert layer_of()["samplers"] < layer_of()["solvers"]  # so samplers -> solvers would be reported as upward
    assert "registry" in imports() and {"samplers", "solvers", "flow"} <= imports()["registry"]
