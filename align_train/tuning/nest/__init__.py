"""NeST, neuron selective tuning: train only safety-relevant MLP neurons, one shared vector per cluster.

probe (activations) -> select (probe, z-scores, k-means) -> parametrize (cluster vectors) ->
artifact (cache, adapter) -> strategy (the tuning strategy the run uses).
"""

from align_train.tuning.nest.artifact import apply_adapter
from align_train.tuning.nest.strategy import NestTuning

__all__ = ["NestTuning", "apply_adapter"]
