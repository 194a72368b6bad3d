"""Data loading at scale: load time and peak memory per process, the data layer before and after, in one run.

    python -m bench.data_loading                      # 1,000,000 conversational preference pairs
    python -m bench.data_loading --rows 200000        # a smaller file
    python -m bench.run --parts data_loading          # the same, as a part of `make bench`

One JSON Lines file of generated conversational pairs (prompt / chosen / rejected as chat messages, the
layout of the bundled data) is loaded by each case in a fresh process, so that its peak memory is its
own; every case first imports the same libraries (datasets, TRL, torch, the data layer), and reports its
resident memory after the imports as well as its peak, so the difference is the data:

- ``datasets``: ``datasets.Dataset.from_json`` of the file into an empty cache -- the library's own
  baseline (what any Arrow-native reading costs);
- ``before``: ``load_data`` of the data layer at ``--baseline`` (a git commit: its ``align_train/`` is
  exported and imported instead of this checkout's), the same file and settings;
- ``after_cold``: ``load_data`` now, into an empty cache;
- ``after_cached``: ``load_data`` again over the cache ``after_cold`` left -- what every other process
  of a node does, and every later run.

Figures go to ``bench/results/data_loading.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "0477557"  # the data layer before it read Arrow-native (rows validated as Python dicts on every rank)
TOPICS = ["garden", "budget", "essay", "recipe", "trip", "workout", "email", "poem", "bug", "plan", "letter", "speech"]


def generate(path: Path, rows: int, seed: int = 0) -> Path:
    """``rows`` conversational pairs, varied enough that no two rows are alike (about 400 bytes each)."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        for i in range(rows):
            topic = rng.choice(TOPICS)
            prompt = f"Request {i}: could you help me with my {topic}? I need it by {rng.randint(1, 28)} May."
            good = (f"Of course. For your {topic}, start with a short outline, then fill in each part; "
                    f"step {rng.randint(2, 9)} is where most people get stuck, so leave time for it. "
                    f"Reference {rng.getrandbits(48):x}.")
            bad = f"No. Do your own {topic}. ({rng.getrandbits(32):x})"
            handle.write(json.dumps({
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": good}],
                "rejected": [{"role": "assistant", "content": bad}],
            }) + "\n")
    return path


# --------------------------------------------------------------------------- one case, in its own process


def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run_case(kind: str, file: str) -> dict:
    """The case's load, timed, with its memory: resident after imports, peak of this process and of its workers."""
    import importlib

    import datasets

    for module in ("torch", "trl.data_utils"):  # imported by every case: the same baseline
        importlib.import_module(module)

    import align_train
    from align_train.config import DataConfig, SourceConfig
    from align_train.data import load_data

    datasets.disable_progress_bars()
    imported = _rss_mb()
    start = time.perf_counter()
    if kind == "datasets":
        rows = len(datasets.Dataset.from_json(file))
    else:
        bundle = load_data(DataConfig(train={"pairs": SourceConfig(path=file)}), ("preference",), "dpo")
        rows = len(bundle.train)
    seconds = time.perf_counter() - start
    return {"kind": kind, "rows": rows, "seconds": round(seconds, 2), "rss_after_imports_mb": round(imported),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0),
            "peak_rss_workers_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0),
            # at the end, split: the process's own memory, and pages of files it maps (the Arrow cache,
            # shared and reclaimable: RSS counts them once validation has read through them)
            "rss_anon_mb": round(_rss_mb("RssAnon")), "rss_file_mb": round(_rss_mb("RssFile")),
            "align_train": str(Path(align_train.__file__).parent)}


def _spawn(kind: str, file: Path, cache: Path, code: Path) -> dict:
    """The case in a fresh interpreter that imports ``align_train`` from ``code`` and caches into ``cache``."""
    env = {**os.environ, "PYTHONPATH": str(code), "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, str(Path(__file__).resolve()), "--case", kind, "--file", str(file)]
    done = subprocess.run(command, cwd=str(cache.parent), env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"data loading case {kind} failed:\n{done.stderr[-4000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    assert Path(result["align_train"]) == code / "align_train", result  # the intended data layer was measured
    return result


def export_baseline(commit: str, into: Path) -> Path:
    """``align_train/`` as it was at ``commit``, exported beside the run (nothing in the checkout changes)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "align_train"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


# --------------------------------------------------------------------------- the comparison


def measure(rows: int, work: Path, baseline: str = BASELINE) -> dict:
    """Every case over one generated file; returns the figures (see the module's docstring)."""
    file = generate(work / f"pairs-{rows}.jsonl", rows)
    before_code = export_baseline(baseline, work / "baseline")
    cases = {
        "datasets": _spawn("datasets", file, work / "cache-datasets", ROOT),
        "before": _spawn("before", file, work / "cache-before", before_code),
        "after_cold": _spawn("after", file, work / "cache-after", ROOT),
        "after_cached": _spawn("after", file, work / "cache-after", ROOT),
    }
    for case in cases.values():
        case["data_rss_mb"] = case["peak_rss_mb"] - case["rss_after_imports_mb"]
        del case["align_train"]
    library = cases["datasets"]["peak_rss_mb"]
    return {
        "rows": rows, "file_mb": round(file.stat().st_size / 2**20), "baseline_commit": baseline,
        "cases": cases,
        "after_peak_above_datasets_gb": round((cases["after_cold"]["peak_rss_mb"] - library) / 1024, 3),
        "after_workers_peak_above_datasets_gb": round((cases["after_cold"]["peak_rss_workers_mb"] - library) / 1024, 3),
        # the process's own memory once loaded, file-backed pages of the mapped Arrow cache left out
        "after_anon_above_datasets_gb": round((cases["after_cold"]["rss_anon_mb"]
                                               - cases["datasets"]["rss_anon_mb"]) / 1024, 3),
        "after_cached_anon_above_datasets_gb": round((cases["after_cached"]["rss_anon_mb"]
                                                      - cases["datasets"]["rss_anon_mb"]) / 1024, 3),
        "speedup_cold": round(cases["before"]["seconds"] / cases["after_cold"]["seconds"], 2),
        "speedup_cached": round(cases["before"]["seconds"] / cases["after_cached"]["seconds"], 2),
        "goal": "after: peak memory per process <= the datasets baseline + 0.3 GB; a cached reload in seconds",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline", default=BASELINE, help="the git commit measured as 'before'")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print("RESULT " + json.dumps(run_case(args.case, args.file)), flush=True)
        return
    sys.path.insert(0, str(ROOT))
    from bench.run import save

    work = Path(tempfile.mkdtemp(prefix="align-train-data-bench-"))
    try:
        save("data_loading", measure(args.rows, work, args.baseline))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
