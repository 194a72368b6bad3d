"""NeST files: the selection cached in the run directory, and the adapter written beside the model.

``RUN/nest_selection.safetensors``  selected neurons and their clusters per MLP block, plus the
    settings that produced them; a resumed run reads it instead of probing again.
``final/nest_adapter.safetensors``  neurons, clusters and the trained cluster vectors: a few
    hundred KB that turn the base model into the tuned one (``apply_adapter``).
``final/nest_adapter.json``         what a person wants to know about the selection.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from align_train.tuning.nest.parametrize import KINDS, add_to_neurons, projection
from align_train.tuning.nest.select import LayerSelection

SELECTION_FILE = "nest_selection.safetensors"
ADAPTER_FILE = "nest_adapter.safetensors"
ADAPTER_INFO = "nest_adapter.json"


def _tensors(selection: list[LayerSelection]) -> dict[str, torch.Tensor]:
    out = {}
    for layer in selection:
        out[f"{layer.module}.neurons"] = layer.neurons.contiguous()
        out[f"{layer.module}.clusters"] = layer.clusters.contiguous()
    return out


def _metadata(selection: list[LayerSelection], **extra) -> dict[str, str]:
    layers = [{"module": s.module, "n_clusters": s.n_clusters} for s in selection]
    return {"layers": json.dumps(layers), **{k: json.dumps(v) for k, v in extra.items()}}


def read_artifact(path: Path) -> tuple[list[LayerSelection], dict, dict[str, torch.Tensor]]:
    """(selection, metadata, tensors) of a selection cache or an adapter file."""
    with safe_open(str(path), framework="pt") as handle:
        meta = {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    selection = [LayerSelection(entry["module"], tensors[f"{entry['module']}.neurons"],
                                tensors[f"{entry['module']}.clusters"], entry["n_clusters"])
                 for entry in meta["layers"]]
    return selection, meta, tensors


def save_selection(path: Path, selection: list[LayerSelection], settings: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")  # whole or not at all: a crash mid-write leaves no half cache
    save_file(_tensors(selection), str(tmp), metadata=_metadata(selection, settings=settings))
    tmp.replace(path)


def cached_settings(path: Path) -> dict | None:
    """The settings a cached selection was made with (None when there is no cache)."""
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as handle:
        return json.loads((handle.metadata() or {}).get("settings", "null"))


def load_selection(path: Path, settings: dict) -> list[LayerSelection] | None:
    """The cached selection, or None when there is none or it was made with other settings."""
    if not path.is_file():
        return None
    selection, meta, _ = read_artifact(path)
    return selection if meta.get("settings") == settings else None


def save_adapter(directory: Path, selection: list[LayerSelection], deltas: dict, kinds: list[str],
                 info: dict) -> dict:
    """Write the adapter and its JSON description; returns the description."""
    tensors = _tensors(selection)
    for (module, kind), delta in deltas.items():
        tensors[f"{module}.delta.{kind}"] = delta.detach().float().cpu().contiguous()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ADAPTER_FILE
    save_file(tensors, str(path), metadata=_metadata(selection, weights=kinds))
    info = {**info, "artifact_bytes": path.stat().st_size, "weights": kinds,
            "neurons_per_layer": {s.module: len(s.neurons) for s in selection},
            "clusters_per_layer": {s.module: s.n_clusters for s in selection},
            "cluster_sizes": {s.module: torch.bincount(s.clusters, minlength=s.n_clusters).tolist()
                              for s in selection}}
    (directory / ADAPTER_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info


@torch.no_grad()
def apply_adapter(model: torch.nn.Module, path) -> torch.nn.Module:
    """Fold a saved NeST adapter into a base model's weights (in place): the tuned model, no overhead."""
    selection, meta, tensors = read_artifact(Path(path))
    for layer in selection:
        for kind in meta["weights"]:
            linear = projection(model, layer.module, kind)
            device = linear.weight.device
            vectors = tensors[f"{layer.module}.delta.{kind}"][layer.clusters]
            linear.weight.copy_(add_to_neurons(linear.weight, KINDS[kind][1], layer.neurons.to(device),
                                               vectors.to(device)))
    return model
