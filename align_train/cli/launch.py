"""``align-launch slurm recipe=... nodes=2 gpus_per_node=8 [--dry-run]``: a recipe as a SLURM job.

The launch settings (``nodes``, ``gpus_per_node``, ``accelerate_config``, ``time``, ...: the
fields of ``SlurmJob``) are given as ``key=value`` like the run's own overrides; every other
argument goes to align-train unchanged. The run config is composed and checked for the job's
process count before anything is submitted, so a batch that does not divide, or a combination
the chosen launcher cannot run, fails here rather than in the queue.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

from align_train.cli.errors import run_command
from align_train.errors import ConfigError
from align_train.launch.slurm import SlurmJob, render, submit

JOB_FIELDS = {f.name: f for f in dataclasses.fields(SlurmJob)}


def split_arguments(arguments: list[str]) -> tuple[SlurmJob, list[str]]:
    """Launch settings into a SlurmJob; the rest are align-train overrides."""
    job, overrides = SlurmJob(), []
    for argument in arguments:
        key, sep, value = argument.partition("=")
        if not sep or key not in JOB_FIELDS:
            overrides.append(argument)
            continue
        if key == "sbatch_args":
            job.sbatch_args.append(value)
        elif JOB_FIELDS[key].type in ("int", int):
            try:
                setattr(job, key, int(value))
            except ValueError:
                raise ConfigError(f"{key} must be an integer, got '{value}'") from None
        else:
            setattr(job, key, value)
    return job, overrides


def check_run(job: SlurmJob, overrides: list[str]):
    """Compose the run config as the job will, and check it for the job's process count and launcher."""
    from align_train.composition import compose, setup
    from align_train.launch.checks import launch_from_accelerate_config
    from align_train.recipes import check_selected
    from align_train.train import validate_config

    setup()
    check_selected(overrides)
    cfg = compose([o for o in overrides if not o.startswith("output_dir=")])
    launch = launch_from_accelerate_config(job.accelerate_config)
    validate_config(cfg, job.num_processes, launch=launch)
    return cfg


def slurm(arguments: list[str], dry_run: bool, script_path: str | None) -> int:
    job, overrides = split_arguments(arguments)
    job.validate()
    from align_train.launch.checks import resolve_config_path

    job.accelerate_config = str(resolve_config_path(job.accelerate_config).resolve())
    with contextlib.redirect_stdout(sys.stderr):  # library chatter must not mix into a printed script
        cfg = check_run(job, overrides)
    script = render(job, overrides, cfg.run_name)
    if dry_run:
        print(script, end="")
        return 0
    log_dir = Path(job.log_dir or f"runs/{cfg.run_name}/slurm-logs")
    log_dir.mkdir(parents=True, exist_ok=True)  # SLURM does not create the directory of --output
    path = Path(script_path) if script_path else log_dir / f"{job.job_name or cfg.run_name}.sbatch"
    print(submit(script, path))
    print(f"script {path}, logs in {log_dir}/")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="align-launch",
        description="Launch align-train at scale. 'slurm': render an sbatch script for a recipe and submit it.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    slurm_parser = sub.add_parser(
        "slurm", help="render and submit (or print) a SLURM job for a recipe",
        description="key=value settings: " + ", ".join(JOB_FIELDS) + "; anything else is an align-train override "
                    "(recipe=..., train.learning_rate=...).",
    )
    slurm_parser.add_argument("--dry-run", action="store_true", help="print the script instead of submitting it")
    slurm_parser.add_argument("--script", help="where to write the script before sbatch (default: in the log directory)")
    slurm_parser.add_argument("arguments", nargs="*", help="key=value launch settings and align-train overrides")
    args = parser.parse_args(argv)
    run_command("align-launch", slurm, args.arguments, args.dry_run, args.script)


if __name__ == "__main__":
    main()
