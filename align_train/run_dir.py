"""The run directory: what a run leaves behind so it can be read, reproduced and resumed.

    config.yaml      the resolved config
    run_info.json    git commit, package versions, command line, processes
    data_report.json sources, row counts, skipped rows
    metrics.jsonl    one line per logging step (see tracking.py)
    checkpoint-N/    trainer checkpoints (resume picks the last complete one: the one with its marker)
    final/           the trained model (or adapter) and tokenizer
    summary.json     headline metrics before and after training
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from omegaconf import OmegaConf
from transformers import TrainerCallback

from align_train.errors import ConfigError
from align_train.paths import PROJECT_ROOT

PACKAGES = ("align-train", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "hydra-core",
            "omegaconf", "deepspeed", "wandb")
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def git_commit(root: Path = PROJECT_ROOT) -> dict:
    """Commit of the project checkout (and whether it had uncommitted changes), if it is a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# Written last into a checkpoint, after every process has finished writing its part of it.
COMPLETE_MARKER = "checkpoint_complete.json"


def has_weights(path: Path) -> bool:
    """Model weights (full or adapter) or a DeepSpeed engine checkpoint (global_stepN/)."""
    return (any(path.glob("*.safetensors")) or any(path.glob("*/adapter_model.safetensors"))
            or any(p.is_dir() for p in path.glob("global_step*")))


def is_complete_checkpoint(path: Path, marked: bool = True) -> bool:
    """A checkpoint resume may use.

    The trainer writes checkpoint-N in place, file by file and process by process, so no single
    file of its own proves the checkpoint whole (trainer_state.json can be written by the main
    process while another still writes its shards, or be cut short by a kill). The marker,
    written after a barrier once the trainer's save returned, does. ``marked=False`` accepts a
    checkpoint from elsewhere (another trainer, an older align-train) named explicitly.
    """
    if marked and not (path / COMPLETE_MARKER).is_file():
        return False
    return (path / "trainer_state.json").is_file() and has_weights(path)


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints in step order."""
    found = [(int(m.group(1)), p) for p in run_dir.glob("checkpoint-*") if (m := CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found) if is_complete_checkpoint(p)]


def resolve_resume(resume, run_dir: Path) -> str | None:
    """The checkpoint to continue from, or None for a fresh start; refuses to overwrite silently."""
    existing = checkpoints(run_dir)
    if resume in (False, None, "false", "False"):
        if existing:
            raise ConfigError(
                f"output_dir '{run_dir}' already holds checkpoints ({existing[-1].name}); set resume=true to continue "
                "from the last one, or choose another output_dir"
            )
        return None
    if resume in (True, "true", "True", "auto"):
        return str(existing[-1]) if existing else None
    path = Path(str(resume))
    if not is_complete_checkpoint(path, marked=False):
        raise ConfigError(f"resume: '{resume}' is not a complete checkpoint directory (needs trainer_state.json and weights)")
    return str(path)


def last_checkpoint(run_dir: Path) -> str | None:
    """The newest complete checkpoint, for messages ("the last good checkpoint is ...")."""
    existing = checkpoints(Path(run_dir))
    return str(existing[-1]) if existing else None


class CheckpointMarker(TrainerCallback):
    """Marks each checkpoint complete once every process has written its part.

    ``on_save`` runs on every process after the trainer's save (weights, optimizer and
    DeepSpeed shards, RNG states, trainer state) returned there; after a barrier the main
    process writes the marker atomically. A kill at any earlier moment leaves a checkpoint
    without a marker, which resume skips.
    """

    def on_save(self, args, state, control, **kwargs):
        from accelerate import PartialState

        PartialState().wait_for_everyone()
        if state.is_world_process_zero:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            write_json(path / COMPLETE_MARKER, {"step": state.global_step, "epoch": state.epoch})


def write_run_files(cfg, run_dir: Path, world_size: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    info = {
        "git": git_commit(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
        "world_size": world_size,
    }
    (run_dir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")


def write_json(path: Path, content: dict) -> None:
    """Write whole or not at all: a crash mid-write never leaves a truncated file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(content, indent=2, default=str) + "\n")
    os.replace(tmp, path)
