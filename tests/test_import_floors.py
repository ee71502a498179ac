"""No module imports from a package above its own (every import statement, at module level or inside functions).

Floors, bottom to top: arrays, config, patches; params, layers, ssm; data, vision, models, metrics, viz; tasks;
train; the command line and the programs on it (cli, demo, reproduce, results). `malloc` and the package root stand
on the ground.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "slotssm"
FLOORS = {
    "__init__": 0, "arrays": 0, "config": 0, "malloc": 0, "patches": 0,
    "params": 1, "layers": 1, "ssm": 1,
    "data": 2, "vision": 2, "models": 2, "metrics": 2, "viz": 2,
    "tasks": 3,
    "train": 4,
    "cli": 5, "demo": 5, "reproduce": 5, "results": 5, "__main__": 5,
}


def _unit(module: str) -> str:
    """'slotssm.train.config' -> 'train'; 'slotssm' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts)
        here = _unit(module if rel.name != "__init__" or len(rel.parts) > 2 else "slotssm")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:  # relative: inside the same package
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                if name == "slotssm" or not name.startswith("slotssm."):
                    continue
                there = _unit(name)
                if FLOORS[there] > FLOORS[here]:
                    found.append(f"{module}:{node.lineno} ({here}, floor {FLOORS[here]}) imports {name} "
                                 f"({there}, floor {FLOORS[there]})")
    return found


def test_every_package_has_a_floor():
    units = {p.stem if p.parent == SRC else p.relative_to(SRC).parts[0] for p in SRC.rglob("*.py")}
    assert units <= set(FLOORS), sorted(units - set(FLOORS))


def test_no_module_imports_from_a_floor_above_its_own():
    assert upward_imports() == []


if __name__ == "__main__":
    print("\n".join(upward_imports()) or "no upward imports")
