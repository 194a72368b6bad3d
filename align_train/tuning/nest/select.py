"""Score, select and cluster neurons from their pooled activations (scikit-learn does the fitting).

Per layer, an L2 logistic regression on standardised activations separates harmful (1) from
harmless (0) prompts; a neuron's weight in it, z-scored within the layer, says how much the
probe leans on that neuron relative to its neighbours. Neurons with |z| above the threshold
are kept (``selection: random`` keeps as many neurons per layer drawn at random instead: the
control that shows whether the probe's choice matters). The kept neurons are then grouped by k-means on their normalised activation
profiles (one value per probe prompt), so neurons that fire on the same prompts share one
update.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class LayerSelection:
    """The selected neurons of one MLP block and the cluster each belongs to."""

    module: str  # e.g. model.layers.3.mlp
    neurons: torch.Tensor  # int64, sorted neuron indices
    clusters: torch.Tensor  # int64, same length, in [0, n_clusters)
    n_clusters: int


def probe_z_scores(harmful: torch.Tensor, harmless: torch.Tensor, c: float) -> np.ndarray:
    """z-scored per-neuron weights of a logistic-regression probe (harmful = 1) on one layer."""
    from sklearn.linear_model import LogisticRegression  # sklearn loads only where a probe is fitted
    from sklearn.preprocessing import StandardScaler

    x = torch.cat([harmful, harmless]).double().numpy()
    y = np.r_[np.ones(len(harmful)), np.zeros(len(harmless))]
    x = StandardScaler().fit_transform(x)  # constant neurons become 0 and get weight 0
    probe = LogisticRegression(C=c, max_iter=2000).fit(x, y)
    w = probe.coef_[0]
    std = w.std()
    return (w - w.mean()) / std if std > 0 else np.zeros_like(w)


def select_neurons(z: np.ndarray, threshold: float, cap: int | None) -> np.ndarray:
    """Indices with |z| > threshold, the largest |z| first when capped, returned sorted."""
    keep = np.flatnonzero(np.abs(z) > threshold)
    if cap is not None and len(keep) > cap:
        keep = keep[np.argsort(-np.abs(z[keep]), kind="stable")[:cap]]
    return np.sort(keep)


def cluster_neurons(profiles: torch.Tensor, k: int, seed: int) -> np.ndarray:
    """k-means labels of neurons (rows of ``profiles``: activations over the probe prompts)."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    k = min(k, len(profiles))
    x = profiles.double().numpy()
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)  # shape of the profile, not its scale
    if k == 1:
        return np.zeros(len(x), dtype=np.int64)
    with warnings.catch_warnings():  # identical profiles give fewer distinct clusters than k: relabel() copes
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x).astype(np.int64)


def select_layers(modules: list[str], harmful: list[torch.Tensor], harmless: list[torch.Tensor], cfg
                  ) -> list[LayerSelection]:
    """The selection of every layer with at least one neuron past the threshold."""
    selected = []
    for module, h, s in zip(modules, harmful, harmless):
        z = probe_z_scores(h, s, cfg.probe_c)
        neurons = select_neurons(z, cfg.threshold, cfg.max_neurons_per_layer)
        if len(neurons) == 0:
            continue
        if cfg.selection == "random":  # the control: as many neurons, drawn without looking at the probe
            rng = np.random.default_rng([cfg.seed, len(selected)])
            neurons = np.sort(rng.choice(h.shape[1], size=len(neurons), replace=False))
        profiles = torch.cat([h, s])[:, neurons].T  # neurons x prompts
        labels = cluster_neurons(profiles, cfg.clusters, cfg.seed)
        labels = relabel(labels)
        selected.append(LayerSelection(module, torch.from_numpy(neurons).long(), torch.from_numpy(labels).long(),
                                       int(labels.max()) + 1))
    return selected


def relabel(labels: np.ndarray) -> np.ndarray:
    """Cluster ids in order of first appearance (0, 1, ...), so no id is empty."""
    order = {c: i for i, c in enumerate(dict.fromkeys(labels.tolist()))}
    return np.array([order[c] for c in labels.tolist()], dtype=np.int64)
