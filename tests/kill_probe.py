"""``python -m align_train`` that SIGKILLs itself at a named point, as a node failure would.

ALIGN_TRAIN_KILL_AT=POINT:N (the N-th time the point is reached):
  step           at the end of an optimizer step, between saves
  weights_saved  inside a checkpoint save: the weights are written, the optimizer state is not
  trainer_state  inside a checkpoint save: half of trainer_state.json is written
  marker         the completion marker's temporary file is written, not yet moved into place
  rotate         inside rotation: an old checkpoint is renamed for deletion, not yet deleted
  final          inside the final save: the weights are written, the rest is not
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

POINT, _, COUNT = os.environ.get("ALIGN_TRAIN_KILL_AT", "").partition(":")
SEEN: dict[str, int] = {}


def reached(point: str) -> None:
    if point != POINT:
        return
    SEEN[point] = SEEN.get(point, 0) + 1
    if SEEN[point] == int(COUNT or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def install() -> None:
    import transformers
    from transformers import Trainer, TrainerCallback, TrainerState

    import align_train.run_dir as run_dir

    save_optimizer = Trainer._save_optimizer_and_scheduler

    def _save_optimizer_and_scheduler(self, output_dir):
        reached("weights_saved")
        return save_optimizer(self, output_dir)

    Trainer._save_optimizer_and_scheduler = _save_optimizer_and_scheduler

    save_state = TrainerState.save_to_json

    def save_to_json(self, json_path):
        if POINT == "trainer_state" and SEEN.get(POINT, 0) + 1 == int(COUNT or 1):
            text = json.dumps(self.__dict__, indent=2, default=str)
            with open(json_path, "w") as handle:
                handle.write(text[: len(text) // 2])
                handle.flush()
                os.fsync(handle.fileno())
        reached("trainer_state")
        return save_state(self, json_path)

    TrainerState.save_to_json = save_to_json

    write_json = run_dir.write_json

    def marker_json(path, content):
        if Path(path).name == run_dir.COMPLETE_MARKER and POINT == "marker":
            tmp = Path(path).with_suffix(Path(path).suffix + ".tmp")
            tmp.write_text(json.dumps(content))
            reached("marker")
        return write_json(path, content)

    run_dir.write_json = marker_json

    def remove_tree(path):
        doomed = Path(path).with_name(f".deleting-{Path(path).name}-{os.getpid()}")
        os.replace(path, doomed)
        reached("rotate")
        import shutil

        shutil.rmtree(doomed, ignore_errors=True)

    run_dir.remove_tree = remove_tree

    save_model = Trainer.save_model

    def final_save(self, output_dir=None, _internal_call=False):
        result = save_model(self, output_dir, _internal_call)
        if output_dir and Path(output_dir).name == "final":
            reached("final")
        return result

    Trainer.save_model = final_save

    class StepEnd(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            reached("step")

    add = Trainer.__init__

    def init(self, *args, **kwargs):
        add(self, *args, **kwargs)
        self.add_callback(StepEnd())

    Trainer.__init__ = init
    assert transformers  # imported for its side effects on the classes above


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if POINT:
        install()
    from align_train.cli.train import main

    main()
