"""The run directory: what a run leaves behind so it can be read, reproduced and resumed.

    config.yaml          the resolved config of the latest segment (a start or a resume of the run)
    run_info.json        git commit, package versions, command line, processes (latest segment)
    segments/<n>/        config.yaml and run_info.json of every segment, the first one included
    data_report.json     sources, row counts, skipped rows
    metrics.jsonl        one line per logging step (see tracking.py); a {"event": "segment"} line
                         marks each resume, and readers keep the latest value per step
    checkpoint-N/        trainer checkpoints; resume takes the newest complete and intact one
    final/               the trained model (or adapter) and tokenizer
    summary.json         headline metrics before and after training
    eval/                step-N.json per scored step; align-eval adds summary.json and report.html
    .align-train.lock    present while a process owns the directory (pid, host, start time)

Beside the run directories (in their parent, shared by every run of a sweep):

    ref_cache/<key>/     reference log-probs of a tokenised dataset (objectives/ref_cache.py), one entry
                         per reference model, data, max length and chat template

One run owns its directory for its lifetime. A start is planned first without touching the
directory (``plan_start``), so a refused start leaves it byte for byte as it was; only then is
the lock taken, and the run's record is written once everything it needs has loaded.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import re
import shutil
import socket
import struct
import sys
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from omegaconf import OmegaConf
from transformers import TrainerCallback

from align_train.errors import AlignTrainError, ConfigError
from align_train.paths import PROJECT_ROOT

PACKAGES = ("align-train", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "hydra-core",
            "omegaconf", "deepspeed", "wandb")
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Written last into a checkpoint, after every process has finished writing its part of it.
COMPLETE_MARKER = "checkpoint_complete.json"
LOCK_FILE = ".align-train.lock"
SEGMENTS = "segments"
REPORT_FILE = "report.html"  # the HTML evaluation report, in a run's eval/ and in a comparison's folder
REF_CACHE = "ref_cache"
# Keys that differ between segments by design (a resume sets resume=true).
SEGMENT_KEYS_IGNORED = ("resume",)


class RunDir:
    """The layout of one run directory: every file and folder a run writes is named here and nowhere else.

    Plug-ins keep their own artifacts in it under names of their own (``file(name)``).
    """

    def __init__(self, root):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __str__(self) -> str:
        return str(self.root)

    def __fspath__(self) -> str:
        return str(self.root)

    def file(self, name: str) -> Path:
        return self.root / name

    config = property(lambda self: self.root / "config.yaml")
    run_info = property(lambda self: self.root / "run_info.json")
    data_report = property(lambda self: self.root / "data_report.json")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    summary = property(lambda self: self.root / "summary.json")
    final = property(lambda self: self.root / "final")
    final_merged = property(lambda self: self.root / "final-merged")
    eval_dir = property(lambda self: self.root / "eval")
    eval_summary = property(lambda self: self.root / "eval" / "summary.json")
    eval_report = property(lambda self: self.root / "eval" / REPORT_FILE)
    pipeline = property(lambda self: self.root / "pipeline.json")
    lock = property(lambda self: self.root / LOCK_FILE)
    segments = property(lambda self: self.root / SEGMENTS)
    hydra = property(lambda self: self.root / ".hydra")
    # Shared by the runs beside this one (a sweep over beta reuses the reference's log-probs).
    ref_cache = property(lambda self: self.root.parent / REF_CACHE)

    def checkpoint(self, step: int) -> Path:
        return self.root / f"checkpoint-{step}"

    def stage(self, index: int, name: str) -> "RunDir":
        """A pipeline stage's own run directory."""
        return RunDir(self.root / "stages" / f"{index}-{name}")

    def checkpoints(self) -> list[Path]:
        """Complete, intact checkpoints in step order."""
        return checkpoints(self.root)

    def last_checkpoint(self) -> str | None:
        return last_checkpoint(self.root)

    def is_run(self) -> bool:
        """Whether the directory holds an align-train run (a config, checkpoints, a lock...)."""
        return self.root.is_dir() and bool(run_contents(self.root))

    def is_complete(self) -> bool:
        """A run that finished: its summary is written last."""
        return self.summary.is_file()

    def final_step(self) -> int | None:
        return json.loads(self.summary.read_text())["steps"] if self.is_complete() else None


class RunDirBusy(ConfigError):
    """Another process owns the run directory."""


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(root: Path = PROJECT_ROOT) -> dict:
    """Commit of the project checkout (and whether it had uncommitted changes), if it is a git checkout."""
    from align_train.processes import git_provenance

    return git_provenance(root)


def file_mode() -> int:
    """The mode a new file gets under the user's umask (read without changing it for other threads)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def honour_umask(directory: Path) -> None:
    """Libraries write some files through private temporary files (0600); give them the umask's mode."""
    mode = file_mode()
    for path in Path(directory).rglob("*"):
        if path.is_file() and not path.is_symlink() and (path.stat().st_mode & 0o777) != mode:
            try:
                path.chmod(mode)
            except OSError:
                pass


def write_text(path: Path, text: str) -> None:
    """Write whole or not at all: a crash mid-write never leaves a truncated file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, content: dict) -> None:
    """Write whole or not at all: a crash mid-write never leaves a truncated file behind."""
    write_text(path, json.dumps(content, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------- checkpoints


def checkpoint_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Every ``checkpoint-N`` directory, complete or not, in step order."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).glob("checkpoint-*")
             if p.is_dir() and (m := CHECKPOINT.match(p.name))]
    return sorted(found)


def has_weights(path: Path) -> bool:
    """Model weights (full or adapter) or a DeepSpeed engine checkpoint (global_stepN/)."""
    return (any(path.glob("*.safetensors")) or any(path.glob("*/adapter_model.safetensors"))
            or any(p.is_dir() for p in path.glob("global_step*")))


def _safetensors_problem(path: Path) -> str | None:
    """A truncated or garbled safetensors file: its header must parse and its data must all be there."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return "truncated header"
            length = struct.unpack("<Q", head)[0]
            if length > size - 8:
                return "truncated header"
            header = json.loads(handle.read(length))
    except (OSError, ValueError) as err:
        return f"unreadable header ({err})"
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if 8 + length + end != size:
        return f"{size} bytes, its header describes {8 + length + end}"
    return None


def _zip_problem(path: Path) -> str | None:
    """torch.save's zip container (optimizer, scheduler, RNG states) must have its central directory."""
    try:
        with zipfile.ZipFile(path):
            return None
    except (OSError, zipfile.BadZipFile) as err:
        return f"not a complete torch file ({err})"


def checkpoint_problem(path: Path, marked: bool = True) -> str | None:
    """Why resume may not use this checkpoint, or None when it is complete and intact.

    The trainer writes checkpoint-N in place, file by file and process by process, so no single
    file of its own proves the checkpoint whole. The marker, written after a barrier once the
    trainer's save returned, does; it lists every file's size, so a file cut short afterwards (a
    copy interrupted, a disk that filled) is caught too, as are weights whose header and size
    disagree. ``marked=False`` accepts a checkpoint from elsewhere (another trainer, an older
    align-train) named explicitly.
    """
    path = Path(path)
    marker = path / COMPLETE_MARKER
    files: dict = {}
    if marker.is_file():
        try:
            files = json.loads(marker.read_text()).get("files") or {}
        except ValueError:
            return f"its {COMPLETE_MARKER} is unreadable"
    elif marked:
        return f"no {COMPLETE_MARKER} (the save did not finish)"
    for name, size in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, {size} were written"
    try:
        json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "trainer_state.json is missing or unreadable"
    if not has_weights(path):
        return "holds no weights"
    for file in sorted(path.rglob("*")):
        problem = (_safetensors_problem(file) if file.suffix == ".safetensors" else
                   _zip_problem(file) if file.suffix in (".pt", ".pth", ".bin") and file.is_file() else None)
        if problem:
            return f"{file.relative_to(path)}: {problem}"
    return None


def is_complete_checkpoint(path: Path, marked: bool = True) -> bool:
    """A checkpoint resume may use (see ``checkpoint_problem``)."""
    return checkpoint_problem(path, marked) is None


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete, intact checkpoints in step order."""
    return [p for _, p in checkpoint_dirs(run_dir) if is_complete_checkpoint(p)]


def last_checkpoint(run_dir: Path) -> str | None:
    """The newest complete checkpoint, for messages ("the last good checkpoint is ...")."""
    existing = checkpoints(Path(run_dir))
    return str(existing[-1]) if existing else None


def remove_tree(path: Path) -> None:
    """Delete a directory so that a kill midway never leaves a marked but partial checkpoint: rename, then delete."""
    doomed = path.with_name(f".deleting-{path.name}-{os.getpid()}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def rotate(run_dir: Path, keep: int | None) -> list[Path]:
    """Keep the newest ``keep`` complete checkpoints; drop older incomplete ones and interrupted deletions.

    Runs after the newest checkpoint is marked complete, so the last complete checkpoint is never
    deleted before a newer one is.
    """
    removed = []
    for leftover in Path(run_dir).glob(".deleting-checkpoint-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    complete = checkpoints(run_dir)
    if not complete:
        return removed
    newest = int(CHECKPOINT.match(complete[-1].name).group(1))
    doomed = complete[:-keep] if keep else []
    doomed += [p for step, p in checkpoint_dirs(run_dir) if step < newest and p not in complete]
    for path in doomed:
        remove_tree(path)
        removed.append(path)
    return removed


class CheckpointMarker(TrainerCallback):
    """Marks each checkpoint complete once every process has written its part, then rotates.

    ``on_save`` runs on every process after the trainer's save (weights, optimizer and
    DeepSpeed shards, RNG states, trainer state) returned there; after a barrier the main
    process writes the marker atomically, listing every file's size. A kill at any earlier
    moment leaves a checkpoint without a marker, which resume skips. Rotation (the trainer's own
    is turned off: it deletes inside the save, before the new checkpoint is complete) comes after.
    """

    def __init__(self, keep: int | None = None):
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        from accelerate import PartialState

        PartialState().wait_for_everyone()
        if state.is_world_process_zero:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            honour_umask(path)
            files = {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*"))
                     if p.is_file() and p.name != COMPLETE_MARKER}
            write_json(path / COMPLETE_MARKER, {"step": state.global_step, "epoch": state.epoch, "files": files})
            rotate(Path(args.output_dir), self.keep)
        PartialState().wait_for_everyone()  # no process goes on (and may save again) while rotation deletes


# --------------------------------------------------------------------------- ownership


def _lock_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """One run owns its directory: an flock'd file naming the owner's pid, host and start time.

    The operating system releases an flock when its process dies, so a crash leaves a stale
    file, never a held lock; a stale file is taken over. Where a filesystem ignores flock, a live
    pid of this host in the file still counts as the owner.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def holder(self) -> dict | None:
        """The owner's details when another live process holds the directory (read-only probe)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                held = False
            except OSError:
                held = True
            try:
                info = json.loads(os.read(fd, 65536) or b"{}")
            except ValueError:
                info = {}
        finally:
            os.close(fd)
        if not held and not (info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int)
                             and info["pid"] != os.getpid() and _alive(info["pid"])):
            return None
        return info or {"pid": "?", "host": "?"}

    def busy_error(self, info: dict) -> RunDirBusy:
        return RunDirBusy(
            f"output_dir '{self.path.parent}' is in use by another run (pid {info.get('pid')} on "
            f"{info.get('host')}, since {info.get('started', '?')}); two runs never share a directory: wait for it "
            f"to end, or choose another output_dir"
        )

    def acquire(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as err:
                raise ConfigError(f"output_dir '{self.path.parent}' is not writable ({err.strerror}); choose a "
                                  "directory you can write to") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self.busy_error(self.holder() or {}) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file the previous owner unlinked between our open and our lock
                break
            os.close(fd)
        stale = self.holder_from(fd)
        if stale and stale.get("host") == socket.gethostname() and isinstance(stale.get("pid"), int) and \
                stale["pid"] != os.getpid() and _alive(stale["pid"]):
            os.close(fd)
            raise self.busy_error(stale)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_lock_info()).encode())
        os.fsync(fd)
        self.fd = fd

    @staticmethod
    def holder_from(fd: int) -> dict:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            return json.loads(os.read(fd, 65536) or b"{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None


# --------------------------------------------------------------------------- planning a start


@dataclass
class Start:
    """How a run begins in its directory, decided before anything is written."""

    resume_from: str | None = None  # the checkpoint to continue from
    segment: int = 0  # 0 for a new run; n for its n-th resume or restart
    discard: list[Path] = field(default_factory=list)  # unusable checkpoints the run will write again
    notes: list[str] = field(default_factory=list)  # what to tell the user


RESUME_VALUES = "false (a new run), true (continue from the last complete checkpoint), restart (step 0 in " \
                "this directory) or a checkpoint path"


def resume_mode(resume) -> str:
    if resume in (False, None) or str(resume).lower() == "false":
        return "fresh"
    if resume is True or str(resume).lower() in ("true", "auto"):
        return "auto"
    if str(resume).lower() == "restart":
        return "restart"
    if not isinstance(resume, str) or not resume.strip():
        raise ConfigError(f"resume is {resume!r}; expected {RESUME_VALUES}")
    return "path"


def run_contents(run_dir: Path) -> list[str]:
    """What in a directory shows it holds an align-train run."""
    names = ("config.yaml", "metrics.jsonl", "summary.json", "final", "run_info.json", LOCK_FILE, SEGMENTS)
    found = [n for n in names if (run_dir / n).exists()]
    found += [p.name for _, p in checkpoint_dirs(run_dir)]
    return found


def next_segment(run_dir: Path) -> int:
    existing = [int(p.name) for p in (run_dir / SEGMENTS).glob("*") if p.name.isdigit()]
    if existing:
        return max(existing) + 1
    return 1 if (run_dir / "config.yaml").is_file() or checkpoint_dirs(run_dir) else 0


def plan_start(run_dir: Path, resume) -> Start:
    """Decide how the run starts in ``run_dir``, or refuse naming the reason; reads, never writes."""
    run_dir = Path(run_dir)
    mode = resume_mode(resume)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output_dir '{run_dir}' exists and is not a directory")
    holder = RunLock(run_dir).holder()
    if holder:
        raise RunLock(run_dir).busy_error(holder)
    if mode == "path":
        problem = checkpoint_problem(Path(str(resume)), marked=False)
        if problem:
            raise ConfigError(f"resume: '{resume}' cannot be resumed from: {problem}")
        return Start(resume_from=str(resume), segment=next_segment(run_dir))
    entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if not entries:
        return Start()
    contents = run_contents(run_dir)
    if not contents:
        shown = ", ".join(entries[:6]) + (", ..." if len(entries) > 6 else "")
        raise ConfigError(f"output_dir '{run_dir}' exists and is not an align-train run directory (it holds {shown}); "
                          "choose a new or empty directory")
    if mode == "fresh":
        existing = checkpoints(run_dir)
        what = f"checkpoints ({existing[-1].name})" if existing else ", ".join(contents[:4])
        raise ConfigError(f"output_dir '{run_dir}' already holds a run ({what}); set resume=true to continue from its "
                          "last complete checkpoint, or choose another output_dir")
    all_dirs = checkpoint_dirs(run_dir)
    problems = {p: checkpoint_problem(p) for _, p in all_dirs}
    complete = [(step, p) for step, p in all_dirs if problems[p] is None]
    segment = next_segment(run_dir)
    if mode == "restart":
        if complete:
            raise ConfigError(f"resume=restart: output_dir '{run_dir}' has complete checkpoints ({complete[-1][1].name}); "
                              "resume=true continues from the last one, or choose another output_dir")
        return Start(segment=segment, discard=[p for _, p in all_dirs],
                     notes=[f"restarting from step 0 in {run_dir} (segment {segment})"])
    if complete:
        step, newest = complete[-1]
        skipped = [(p, problems[p]) for s, p in all_dirs if s > step]
        notes = [f"warning: {p.name} cannot be resumed from ({why}); resuming from {newest.name}, the newest complete "
                 "and intact checkpoint" for p, why in skipped]
        return Start(resume_from=str(newest), segment=segment, discard=[p for p, _ in skipped], notes=notes)
    if all_dirs:
        reasons = "; ".join(f"{p.name}: {problems[p]}" for _, p in all_dirs[-3:])
        raise ConfigError(f"resume=true: output_dir '{run_dir}' holds checkpoints but none is complete and intact "
                          f"({reasons}); resume=restart starts again from step 0 in this directory")
    if (run_dir / "summary.json").is_file():
        raise ConfigError(f"resume=true: the run in '{run_dir}' is complete (summary.json) and saved no checkpoint to "
                          "continue from; choose another output_dir for a new run")
    return Start(segment=segment, notes=[f"no checkpoint in {run_dir} yet: starting from step 0 (segment {segment})"])


def resolve_resume(resume, run_dir: Path) -> str | None:
    """The checkpoint a start with this ``resume`` continues from (None: step 0), or ConfigError."""
    return plan_start(Path(run_dir), resume).resume_from


# --------------------------------------------------------------------------- the run's record


def run_info(world_size: int, overrides: list[str] | None = None) -> dict:
    return {
        "git": git_commit(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
        "overrides": overrides,
        "world_size": world_size,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def config_changes(before, after) -> list[str]:
    """``key: old -> new`` for every setting that differs between two resolved configs."""
    def flat(node, prefix=""):
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                out.update(flat(value, f"{prefix}{key}."))
            return out
        return {prefix.rstrip("."): node}

    a, b = flat(before or {}), flat(after or {})
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k.split(".")[0] not in SEGMENT_KEYS_IGNORED)
    return [f"{k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}" for k in keys]


def write_run_files(cfg, run_dir: Path, world_size: int, segment: int = 0, overrides: list[str] | None = None,
                    resumed_from: str | None = None) -> list[str]:
    """Record a segment: its config and run info (also as the run's latest), and a marker in metrics.jsonl.

    Returns the settings changed since the previous segment, for the log.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    previous = run_dir / "config.yaml"
    changes = config_changes(OmegaConf.to_container(OmegaConf.load(previous)), resolved) if (
        segment and previous.is_file()) else []
    info = run_info(world_size, overrides)
    info.update(segment=segment, resumed_from=resumed_from, changed=changes)
    for where in (run_dir / SEGMENTS / str(segment), run_dir):
        where.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(resolved), where / "config.yaml")
        write_json(where / "run_info.json", info)
    if overrides is not None:  # Hydra's own record of the command line, kept where Hydra users look for it
        (run_dir / ".hydra").mkdir(exist_ok=True)
        OmegaConf.save(OmegaConf.create(list(overrides)), run_dir / ".hydra" / "overrides.yaml")
        OmegaConf.save(OmegaConf.create(resolved), run_dir / ".hydra" / "config.yaml")
    if segment:
        step = int(CHECKPOINT.match(Path(resumed_from).name).group(1)) if resumed_from and CHECKPOINT.match(
            Path(resumed_from).name) else 0
        with (run_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"event": "segment", "segment": segment, "step": step, "time": time.time(),
                                     "resumed_from": resumed_from, "changed": changes}) + "\n")
    return changes


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl as the run's one history: after a segment marker, later lines replace earlier ones of a step.

    A resume from checkpoint-N repeats the steps after N; what the last segment logged for a
    step is what its weights went through.
    """
    records: list[dict] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("event") == "segment":
            records = [r for r in records if r.get("step", 0) <= record.get("step", 0)]
            continue
        records.append(record)
    return records


@contextmanager
def io_errors_named(run_dir: Path):
    """A full (or read-only) disk met while the run writes becomes an error naming it; others pass unchanged."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        reported = reported_io_error(err, Path(run_dir))
        if reported is None:
            raise
        raise reported from err


def reported_io_error(err: BaseException, run_dir: Path) -> AlignTrainError | None:
    """A full disk (or a read-only one) met while writing the run, as an error naming it; None for others."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            where = seen.filename or run_dir
            what = "no space left on device" if seen.errno != errno.EROFS else "read-only file system"
            return AlignTrainError(
                f"{what} while writing {where}; free space (or choose another output_dir) and run again with "
                f"resume=true: the last complete checkpoint ({last_checkpoint(run_dir) or 'none yet'}) is intact, "
                "and a partial one stays unmarked"
            )
        if "No space left on device" in str(seen):
            return AlignTrainError(f"no space left on device while writing under {run_dir}; free space and run again "
                                   f"with resume=true (last complete checkpoint: {last_checkpoint(run_dir) or 'none yet'})")
        seen = seen.__cause__ or seen.__context__
    return None


# --------------------------------------------------------------------------- owning it for a run


class RunOwnership:
    """``with RunOwnership(run_dir, start):`` the lock for the run's lifetime, and the record once committed.

    The main process takes the lock (creating the directory if needed) and every process learns
    whether it could. Until ``commit`` the run has written nothing but the lock: a failure then
    removes the lock again (and the directory, if this start created it and it is still empty),
    so a failed start leaves the directory as it found it. ``commit`` writes the segment's
    record and discards the unusable checkpoints the plan named.
    """

    def __init__(self, run_dir: Path, start: Start):
        from align_train.distributed import process_state

        self.run_dir = Path(run_dir)
        self.start = start
        self.state = process_state()
        self.lock = RunLock(self.run_dir)
        self.created: list[Path] = []
        self.committed = False

    def __enter__(self) -> "RunOwnership":
        from align_train.distributed import any_process

        failure = None
        if self.state.is_main_process:
            try:
                self._make_dirs()
                self.lock.acquire()
            except AlignTrainError as err:
                failure = err
        if any_process(failure is not None):
            if failure is not None:
                self._remove_created()
                raise failure
            raise ConfigError(f"the main process could not take output_dir '{self.run_dir}' (see its message)")
        return self

    def _make_dirs(self) -> None:
        missing = []
        for path in (self.run_dir, *self.run_dir.parents):
            if path.exists():
                break
            missing.append(path)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"output_dir '{self.run_dir}' cannot be created ({err.strerror})") from None
        self.created = missing

    def _remove_created(self) -> None:
        for path in self.created:  # innermost first; only what this start made, and only while empty
            try:
                path.rmdir()
            except OSError:
                break

    def commit(self, cfg, world_size: int, overrides: list[str] | None = None) -> list[str]:
        """Write the segment's record (main process); returns the settings changed since the last segment."""
        self.committed = True
        if not self.state.is_main_process:
            return []
        for path in self.start.discard:
            if path.exists():
                remove_tree(path)
        return write_run_files(cfg, self.run_dir, world_size, self.start.segment, overrides, self.start.resume_from)

    def __exit__(self, kind, error, trace) -> None:
        if self.state.is_main_process:
            self.lock.release()
            if not self.committed:
                self._remove_created()
