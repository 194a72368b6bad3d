"""Pipelines: a recipe's ``stages`` run in turn, each from the previous stage's final model.

    stages:
      - name: midtrain
        overrides: [objective=midtrain, data=msm_documents, train.learning_rate=1e-3]
      - name: sft
        overrides: [objective=sft, data=msm_sft]

Each stage is composed by Hydra's compose API from the same recipe and command-line
overrides, with the stage's overrides in between (recipe < stage < command line), so a stage
is an ordinary run: the same schema checks, the same run directory
(``RUN/stages/<i>-<name>/``), the evaluation hook after it when its ``eval`` is on. Stage
i > 0 starts from stage i-1's ``final/`` (``final-merged/`` when the stage tuned LoRA
adapters). A stage whose ``summary.json`` exists is complete: a rerun with the same
``output_dir`` skips it. Every stage's config is composed and checked before the first one
trains.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from align_train import console
from align_train.composition import compose
from align_train.errors import ConfigError
from align_train.run_dir import RunDir, write_json

NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# Keys the pipeline owns for each stage; such command-line overrides would be ambiguous.
OWNED = ("output_dir", "stages", "hydra")


@dataclass
class StageResult:
    index: int
    name: str
    run_dir: str
    start_model: str
    final_model: str
    status: str  # ran | skipped (already complete)
    summary: dict = field(default_factory=dict)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~/")


def _head(override: str) -> str:
    """The top-level key or group an override sets: ``hydra`` for hydra.x, hydra/x and /hydra/x alike."""
    return re.split(r"[./@]", _key(override), maxsplit=1)[0]


def compose_stages(cfg, overrides: list[str]) -> list[tuple[int, object, object]]:
    """(index, stage, composed config) for every enabled stage, each checked; nothing loads."""
    from align_train.train import validate_config

    if not cfg.stages:
        raise ConfigError("stages: the recipe declares no stages")
    from align_train.recipes import check_selected

    base = [o for o in overrides if _head(o) not in OWNED]
    names = [s.name for s in cfg.stages]
    run_dir = RunDir(cfg.output_dir)
    composed = []
    for i, stage in enumerate(cfg.stages):
        where = f"stages[{i}]"
        if not NAME.match(stage.name or ""):
            raise ConfigError(f"{where}.name '{stage.name}' must be letters, digits, '-' or '_'")
        if names.count(stage.name) > 1:
            raise ConfigError(f"{where}.name '{stage.name}' is used by more than one stage")
        if not stage.enabled:
            continue
        owned = [o for o in stage.overrides if _head(o) in OWNED]
        if owned:
            raise ConfigError(f"{where}.overrides: {owned} are set by the pipeline itself")
        check_selected(list(stage.overrides))
        try:
            stage_cfg = compose(list(stage.overrides) + base + [
                f"output_dir={run_dir.stage(i, stage.name)}", f"run_name={cfg.run_name}-{stage.name}", "stages=[]",
            ])
        except ConfigError as err:  # composition errors name the override; add the stage
            raise ConfigError(f"{where} ('{stage.name}'): {err}") from err
        try:
            validate_config(stage_cfg)
        except ConfigError as err:
            raise ConfigError(f"{where} ('{stage.name}'): {err}") from err
        composed.append((i, stage, stage_cfg))
    if not composed:
        raise ConfigError("stages: every stage is disabled")
    for i, stage, stage_cfg in composed[:-1]:
        if stage_cfg.tuning.name == "lora" and not stage_cfg.tuning.save_merged:
            raise ConfigError(
                f"stages[{i}] ('{stage.name}') tunes LoRA adapters and a later stage starts from its model: "
                "add tuning.save_merged=true to its overrides (the next stage loads final-merged/)")
    return composed


def run_pipeline(cfg, overrides: list[str]) -> list[StageResult]:
    """Run (or skip, when complete) each enabled stage in order; print and write the pipeline summary."""
    from align_train.train import run

    from align_train.run_dir import RunOwnership, Start

    run_dir = RunDir(cfg.output_dir)
    composed = compose_stages(cfg, overrides)
    with RunOwnership(run_dir.root, Start()) as owner:  # one pipeline at a time in a directory
        owner.committed = True
        if owner.state.is_main_process:
            OmegaConf.save(cfg, run_dir.config, resolve=True)
        return _run_stages(composed, run_dir, run)


def _run_stages(composed, run_dir: RunDir, run) -> list[StageResult]:
    from align_train.tuning import make_tuning

    started = time.time()
    previous: Path | None = None
    results: list[StageResult] = []
    for i, stage, stage_cfg in composed:
        out = RunDir(stage_cfg.output_dir)
        if previous is not None:
            stage_cfg.model.name_or_path = str(previous)
        start_model = stage_cfg.model.name_or_path
        if out.is_complete():
            summary = json.loads(out.summary.read_text())
            status = "skipped"
            console.log(f"stage {i} '{stage.name}' is complete ({out.summary}); skipping", topic="pipeline")
        else:
            console.log(f"stage {i} '{stage.name}' ({stage_cfg.objective.name} + {stage_cfg.tuning.name}) from "
                        f"{start_model}", topic="pipeline")
            summary = run(stage_cfg).__dict__
            status = "ran"
        previous = make_tuning(stage_cfg.tuning).final_model(out)
        results.append(StageResult(i, stage.name, str(out), start_model, str(previous), status, summary))
    write_json(run_dir.pipeline, {
        "stages": [r.__dict__ for r in results],
        "seconds": time.time() - started,
    })
    print(render(results, run_dir), flush=True)
    return results


def render(results: list[StageResult], run_dir) -> str:
    lines = ["", "=" * 72, f"align-train pipeline: {len(results)} stage(s)"]
    for r in results:
        s = r.summary
        lines.append(f"  {r.index}-{r.name:<12} {s.get('objective', '?')} + {s.get('tuning', '?'):<6} {r.status:<8}"
                     f" {s.get('steps', 0)} steps, {s.get('seconds', 0):.0f}s -> {r.final_model}")
        after = s.get("after") or {}
        before = s.get("before") or {}
        for key in after:
            b = before.get(key)
            lines.append(f"      {key:<20} {b if b is None else round(b, 4)}  ->  {round(after[key], 4)}")
    lines += [f"  pipeline directory {run_dir} (pipeline.json, stages/<i>-<name>/)", "=" * 72]
    return "\n".join(lines)
