"""``python -m align_train`` with two test probes, for tests that launch real processes.

ALIGN_TRAIN_PROBE_DIR: each process appends, per micro-batch, a hash of every example it trains on
  to ``rank<N>.jsonl`` (padding removed), so a test can see which shard each rank got; after
  training it writes a hash of its own copy of the weights to ``rank<N>.weights`` (the gathered
  weights where they are sharded) and, per parameter, what the process holds to ``rank<N>.params.json``
  (DTensor or not, the local and the full shape).
ALIGN_TRAIN_PROBE_KILL_AT=N: at the checkpoint of step N, the process writes half of
  trainer_state.json and then SIGKILLs itself, as a node failure in the middle of a save would.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

from transformers import Trainer, TrainerState
from trl import DPOTrainer

PROBE_DIR = os.environ.get("ALIGN_TRAIN_PROBE_DIR")
KILL_AT = int(os.environ.get("ALIGN_TRAIN_PROBE_KILL_AT", "0"))


def row_hashes(inputs) -> list[str]:
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    rows = []
    for i in range(ids.shape[0]):
        row = ids[i][mask[i].bool()] if mask is not None else ids[i]
        rows.append(hashlib.sha1(row.cpu().numpy().tobytes()).hexdigest()[:16])
    return rows


if PROBE_DIR:
    inner_step = DPOTrainer.training_step

    def training_step(self, model, inputs, *args, **kwargs):
        rank = int(os.environ.get("RANK", "0"))
        record = {"step": self.state.global_step + 1, "rows": row_hashes(inputs)}
        with (Path(PROBE_DIR) / f"rank{rank}.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        return inner_step(self, model, inputs, *args, **kwargs)

    DPOTrainer.training_step = training_step
    inner_train = Trainer.train

    def held(tensor):
        """What this process holds of a parameter: a DTensor's local shard (FSDP2), else the tensor."""
        from torch.distributed.tensor import DTensor

        if isinstance(tensor, DTensor):
            return {"dtensor": True, "local": list(tensor.to_local().shape), "full": list(tensor.shape),
                    "placements": [str(p) for p in tensor.placements]}
        return {"dtensor": False, "local": list(tensor.shape), "full": list(tensor.shape)}

    def train(self, *args, **kwargs):
        from torch.distributed.tensor import DTensor

        result = inner_train(self, *args, **kwargs)
        rank = int(os.environ.get("RANK", "0"))
        params = {name: held(p) for name, p in self.model.named_parameters()}
        (Path(PROBE_DIR) / f"rank{rank}.params.json").write_text(json.dumps(params))
        digest = hashlib.sha1()
        for name, tensor in sorted(self.model.state_dict().items()):
            if isinstance(tensor, DTensor):
                tensor = tensor.full_tensor()  # every process gathers, in the same order
            digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
        (Path(PROBE_DIR) / f"rank{rank}.weights").write_text(digest.hexdigest())
        return result

    Trainer.train = train

if KILL_AT:
    inner_save = TrainerState.save_to_json

    def save_to_json(self, json_path):
        if self.global_step != KILL_AT:
            return inner_save(self, json_path)
        text = json.dumps(self.__dict__, indent=2, default=str)
        with open(json_path, "w") as handle:
            handle.write(text[: len(text) // 2])
            handle.flush()
            os.fsync(handle.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    TrainerState.save_to_json = save_to_json

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from align_train.cli.train import main

    main()
