"""Imports point one way: entry points -> orchestration -> plug-ins -> model reading -> data, models, run
directory -> config -> base. The plug-in folders (objectives, tuning, evaluation, specdocs) do not import
each other. Every import counts, also those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "align_train"

# Lowest first. A module belongs to the first layer with a matching prefix (a package matches its modules).
LAYERS = [
    ("base", ["errors", "paths", "processes", "distributed", "console"]),
    ("config", ["config", "recipes", "composition"]),
    ("data, models, run directory", ["data", "models", "run_dir"]),
    ("model reading", ["inference"]),
    ("plug-ins", ["objectives", "tuning", "evaluation", "specdocs"]),
    ("orchestration", ["train", "pipeline", "summary", "report", "training_args", "tracking", "preemption", "nonfinite",
                       "launch", "model_card", "hub"]),
    ("entry points", ["cli", "__main__"]),
]
SIBLINGS = {"objectives", "tuning", "evaluation", "specdocs"}  # plug-ins never import one another


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    head = module.split(".")[0]
    for index, (_, prefixes) in enumerate(LAYERS):
        if head in prefixes:
            return index
    raise AssertionError(f"align_train.{module} is in no layer: add it to LAYERS")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported align_train module) for every import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("align_train"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            target = next((n for n in reversed(names) if _exists(n)), node.module)
            found.append((node.lineno, target.removeprefix("align_train").lstrip(".")))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.removeprefix("align_train").lstrip(".")) for a in node.names
                      if a.name.startswith("align_train.")]
    return [(line, name) for line, name in found if name]


def _exists(dotted: str) -> bool:
    rel = Path(*dotted.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def violations() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = module_name(path)
        if not source:
            continue
        for line, target in imports_of(path):
            low, high = layer_of(target), layer_of(source)
            head_s, head_t = source.split(".")[0], target.split(".")[0]
            if low > high:
                out.append(f"{path.relative_to(PACKAGE.parent)}:{line} {source} ({LAYERS[high][0]}) imports {target} "
                           f"({LAYERS[low][0]}): upward")
            elif head_s in SIBLINGS and head_t in SIBLINGS and head_s != head_t:
                out.append(f"{path.relative_to(PACKAGE.parent)}:{line} {source} imports {target}: plug-ins import "
                           "each other")
    return out


def test_imports_point_one_way():
    found = violations()
    assert not found, f"{len(found)} import(s) against the layers:\n" + "\n".join(found)
