"""SLURM job scripts for a recipe: render ``launch/slurm/align-train.sbatch``, then submit or print it.

SLURM does the scheduling, requeueing and signalling; accelerate does the process launch. What is
ours is the wiring between them: one launcher task per node, the machine rank from the node's
index, the main address from the job's node list, the total process count (nodes x GPUs), an
output directory that survives a requeue (named after the job id), ``resume=true`` so a requeued
job continues by itself, and the run config checked for that process count before anything is
submitted.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from align_train.errors import ConfigError
from align_train.paths import PROJECT_ROOT
from align_train.processes import run_tool

TEMPLATE = PROJECT_ROOT / "launch" / "slurm" / "align-train.sbatch"
FIELD = re.compile(r"\{\{([A-Z_]+)\}\}")
# An #SBATCH line is read by sbatch, not a shell: a line break would end it and start a line of shell.
UNSAFE_IN_DIRECTIVE = re.compile(r"[\x00-\x1f\x7f]")


def check_sbatch_value(key: str, value) -> None:
    """A value written into an #SBATCH line: no control character, no blank (sbatch splits on them)."""
    if value is None:
        return
    text = str(value)
    if UNSAFE_IN_DIRECTIVE.search(text) or any(c.isspace() for c in text) or not text:
        raise ConfigError(f"{key}={text!r} cannot be written safely into an #SBATCH line (no line breaks, control "
                          "characters or blanks)")


@dataclass
class SlurmJob:
    """The launch settings of ``align-launch slurm`` (everything else is an align-train override)."""

    nodes: int = 1
    gpus_per_node: int = 8
    accelerate_config: str = "launch/accelerate/multi_gpu.yaml"
    time: str = "24:00:00"
    cpus_per_task: int = 32
    signal_seconds: int = 300  # USR1 this long before the time limit: time to finish a step and save
    main_port: int = 29500
    job_name: str | None = None  # default: the recipe's run_name
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    log_dir: str | None = None  # default: runs/<run_name>/slurm-logs
    setup: str = ""  # shell lines run before the launch (module load ..., source .venv/bin/activate)
    launcher: str = "accelerate launch"
    sbatch_args: list[str] = field(default_factory=list)  # extra "#SBATCH" options, e.g. --exclusive

    def validate(self) -> None:
        for key in ("nodes", "gpus_per_node", "cpus_per_task", "signal_seconds", "main_port"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        if not shlex.split(self.launcher or ""):
            raise ConfigError("launcher must name a command (e.g. 'accelerate launch')")
        for key in ("job_name", "partition", "account", "qos", "log_dir", "time"):
            check_sbatch_value(key, getattr(self, key))
        for i, arg in enumerate(self.sbatch_args):
            if UNSAFE_IN_DIRECTIVE.search(arg):
                raise ConfigError(f"sbatch_args[{i}] holds a control character; an #SBATCH line cannot carry it "
                                  "safely")
        for key in ("accelerate_config", "launcher", "setup"):
            if "\x00" in (getattr(self, key) or ""):
                raise ConfigError(f"{key} holds a NUL byte")

    @property
    def num_processes(self) -> int:
        return self.nodes * self.gpus_per_node


def render(job: SlurmJob, overrides: list[str], run_name: str, template: Path = TEMPLATE) -> str:
    """The job script for ``align-train`` with these overrides, launched as ``job`` says.

    Values reach the script in two ways only: as #SBATCH option values (checked by
    ``check_sbatch_value``), and as shell words quoted with ``shlex.quote``; the only expansion
    left to the job's shell is ``${SLURM_JOB_ID}`` in the default output_dir (a requeued job keeps
    its id, so its directory). ``setup`` is the exception by design: shell lines from the user's
    own command line (module load ..., source venv/bin/activate), never from a recipe.
    """
    job.validate()
    check_sbatch_value("run_name", run_name)
    overrides = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "resume"]
    words = [shlex.quote(o) for o in overrides]
    if not any(o.split("=", 1)[0].lstrip("+~") == "output_dir" for o in overrides):
        words.append(shlex.quote(f"output_dir=runs/{run_name}/slurm-") + '"${SLURM_JOB_ID}"')
    words.append("resume=true")  # a requeued job runs this script again and continues its run
    extra = list(job.sbatch_args)
    for key in ("partition", "account", "qos"):
        if getattr(job, key):
            extra.append(f"--{key}={getattr(job, key)}")
    log_dir = job.log_dir or f"runs/{run_name}/slurm-logs"
    check_sbatch_value("log_dir", log_dir)
    values = {
        "JOB_NAME": job.job_name or run_name,
        "NODES": str(job.nodes),
        "GPUS_PER_NODE": str(job.gpus_per_node),
        "CPUS_PER_TASK": str(job.cpus_per_task),
        "TIME": job.time,
        "LOG_DIR": log_dir,
        "SIGNAL_SECONDS": str(job.signal_seconds),
        "EXTRA_SBATCH": "\n".join(f"#SBATCH {arg}" for arg in extra),
        "SETUP": job.setup,
        "MAIN_PORT": str(job.main_port),
        "LAUNCHER": " ".join(shlex.quote(w) for w in shlex.split(job.launcher)),
        "ACCELERATE_CONFIG": shlex.quote(job.accelerate_config),
        "OVERRIDES": " ".join(words),
    }
    text = template.read_text()
    missing = sorted(set(FIELD.findall(text)) - set(values))
    if missing:
        raise ConfigError(f"{template}: unknown field(s) {missing}")
    return FIELD.sub(lambda m: values[m.group(1)], text)


def submit(script: str, path: Path) -> str:
    """Write the script and ``sbatch`` it; returns sbatch's answer (``Submitted batch job N``)."""
    if shutil.which("sbatch") is None:
        raise ConfigError("sbatch is not on PATH: run on a SLURM login node, or use --dry-run to print the script")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    out = run_tool(["sbatch", str(path)])
    if out.returncode != 0:
        raise ConfigError(f"sbatch {path} failed: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip()


def requeue(job_id: str) -> str:
    """Ask SLURM to requeue this job (it must have been submitted with --requeue); returns what happened."""
    try:
        out = run_tool(["scontrol", "requeue", job_id], timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return f"'scontrol requeue {job_id}' failed ({err}); resubmit the job to continue"
    if out.returncode != 0:
        return f"'scontrol requeue {job_id}' failed ({out.stderr.strip()}); resubmit the job to continue"
    return f"SLURM job {job_id} requeued"
