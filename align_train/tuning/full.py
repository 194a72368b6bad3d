"""Full fine-tuning: every parameter trains."""

from torch import nn

from align_train.tuning.base import TuningStrategy


class FullTuning(TuningStrategy):
    name = "full"

    def apply(self, model: nn.Module) -> nn.Module:
        model.requires_grad_(True)
        return model
