"""The NeST parametrisation: W + one trainable vector per cluster at every member neuron.

Registered with ``torch.nn.utils.parametrize`` on the MLP projections, so the model stays a
plain transformers model that any TRL trainer trains: the base weight sits frozen in
``parametrizations.weight.original`` and only the cluster vectors (``delta``) have
gradients. A neuron's slot is a column of down_proj (its output direction) or a row of
gate_proj / up_proj (its input direction); either way a vector of the hidden size.
The vectors are kept in float32 and cast to the weight's dtype where they are added, so a
bf16 model still takes small updates, and folding (the same addition, done once) gives
bit-identical weights.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

# weight kind -> (projection in the MLP block, axis of the weight indexed by neuron)
KINDS = {"down": ("down_proj", 1), "gate": ("gate_proj", 0), "up": ("up_proj", 0)}


class ClusterDelta(nn.Module):
    """Adds ``delta[cluster of n]`` to neuron n's slice of the weight along ``dim``; nothing else moves."""

    def __init__(self, neurons: torch.Tensor, clusters: torch.Tensor, n_clusters: int, hidden: int, dim: int):
        super().__init__()
        self.dim = dim
        # Persistent: a mid-run checkpoint then holds everything needed to fold it (fold_state_dict).
        # Copies: tensors shared between the projections of one block would not save (safetensors refuses them).
        self.register_buffer("neurons", neurons.long().clone())
        self.register_buffer("clusters", clusters.long().clone())
        self.delta = nn.Parameter(torch.zeros(n_clusters, hidden, dtype=torch.float32))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return add_to_neurons(weight, self.dim, self.neurons, self.delta[self.clusters])


def add_to_neurons(weight: torch.Tensor, dim: int, neurons: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """``weight`` with ``vectors[i]`` added to neuron ``neurons[i]``'s column (dim 1) or row (dim 0).

    The one place the update is applied: training, folding a model, folding a checkpoint and applying
    a saved adapter all go through it, so they agree bit for bit.
    """
    vectors = vectors.to(weight.dtype)
    return weight.index_add(dim, neurons, vectors.t() if dim == 1 else vectors)


def projection(model: nn.Module, block: str, kind: str) -> nn.Linear:
    return getattr(model.get_submodule(block), KINDS[kind][0])


def add_deltas(model: nn.Module, selection, kinds: list[str]) -> list[ClusterDelta]:
    """Freeze the model and parametrise the selected neurons' projections; returns the new modules."""
    model.requires_grad_(False)
    added = []
    for layer in selection:
        for kind in kinds:
            linear = projection(model, layer.module, kind)
            hidden = linear.weight.shape[1 - KINDS[kind][1]]
            delta = ClusterDelta(layer.neurons, layer.clusters, layer.n_clusters, hidden, KINDS[kind][1])
            delta.to(linear.weight.device)
            parametrize.register_parametrization(linear, "weight", delta)
            added.append(delta)
    return added


def deltas_of(model: nn.Module, selection, kinds: list[str]) -> dict[tuple[str, str], torch.Tensor]:
    """{(block, kind): its cluster vectors} of a parametrised model."""
    return {(layer.module, kind): projection(model, layer.module, kind).parametrizations.weight[0].delta
            for layer in selection for kind in kinds}


PARAMETRISED = ".parametrizations.weight.original"


def checkpoint_keys(directory) -> list[str]:
    """The tensor names of a directory's safetensors files (read from their headers, no weights loaded)."""
    from pathlib import Path

    from safetensors import safe_open

    keys: list[str] = []
    for path in sorted(Path(directory).glob("*.safetensors")) if Path(directory).is_dir() else []:
        with safe_open(str(path), framework="pt") as handle:
            keys += list(handle.keys())
    return keys


def is_parametrised_state(keys) -> bool:
    """Whether a state dict (e.g. a mid-run checkpoint's) holds NeST-parametrised projections."""
    return any(k.endswith(PARAMETRISED) for k in keys)


def fold_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A parametrised checkpoint's tensors as a plain model's: W + delta under the plain weight names."""
    out = {k: v for k, v in state.items() if ".parametrizations.weight." not in k}
    for key in [k for k in state if k.endswith(PARAMETRISED)]:
        prefix = key[: -len(PARAMETRISED)]
        weight = state[key]
        p = f"{prefix}.parametrizations.weight.0."
        if p + "delta" in state:
            dim = next(d for proj, d in KINDS.values() if prefix.endswith(proj))
            weight = add_to_neurons(weight, dim, state[p + "neurons"], state[p + "delta"][state[p + "clusters"]])
        out[f"{prefix}.weight"] = weight
    return out


def fold(model: nn.Module) -> nn.Module:
    """Write W + delta into the weights and remove every NeST parametrisation (in place)."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight") and any(
                isinstance(p, ClusterDelta) for p in module.parametrizations.weight):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model
