#!/usr/bin/env python
"""Does latent adversarial patch training (LAPT) lower the latent attack's success on the tiny model?

For each seed, ``recipe=tiny/sft`` (SFT on refusals and helpful answers) runs twice with the same
data, steps and seed: once plain, once with ``train.latent_perturbation.layers`` set. The final
model of each is scored by the evaluation hook: refusal of the 60 held-out harmful prompts,
over-refusal of the 40 borderline ones, and the latent attack (eval.latent_robustness) on every
block of the tiny model with a fixed attack seed, so MASR compares like with like. Each run is a
separate ``python -m align_train`` process; the table is read from each run's eval/step-N.json.
A run already finished under --out is read, not repeated, so another --scale reuses the plain runs.

    python scripts/lapt_experiment.py --out runs/lapt --jobs 2           # seeds 1 2 3, LAPT on blocks 1 and 3
    python scripts/lapt_experiment.py --out runs/lapt --layers 2 --scale 0.5 --seeds 1 2 3 4 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

EVAL = ["eval.on_save=false", "eval.baseline=false", "eval.latent_separation.enabled=false", "eval.preference.enabled=false",
        "eval.perplexity.enabled=false", "eval.latent_robustness.prompts.max_prompts=60",
        "eval.latent_robustness.generation.max_new_tokens=24", "eval.latent_robustness.layers=[1,2,3,4]",
        "eval.latent_robustness.seed=0"]
COLUMNS = [("masr", "MASR"), ("asr_unperturbed", "ASR unperturbed"), ("refusal_rate", "refusal (harmful)"),
           ("over_refusal_rate", "over-refusal (borderline)"), ("branching_factor", "branching factor")]


def final_record(run: Path) -> dict:
    records = sorted(run.glob("eval/step-*.json"), key=lambda p: int(p.stem.split("-", 1)[1]))
    record = json.loads(records[-1].read_text())
    record["asr_unperturbed"] = record["suites"]["latent_robustness"]["details"]["asr_unperturbed"]
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/lapt", help="one run directory per seed and arm under this")
    parser.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    parser.add_argument("--layers", nargs="*", type=int, default=[1, 3], help="blocks LAPT perturbs")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for every run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    lapt = f"lapt{args.scale:g}"
    arms = {"plain": [], lapt: [f"train.latent_perturbation.layers=[{','.join(map(str, args.layers))}]",
                                f"train.latent_perturbation.scale={args.scale}"]}
    results: dict[str, dict[int, dict]] = {arm: {} for arm in arms}
    pending = [(arm, seed) for seed in args.seeds for arm in arms]
    running: list = []
    while pending or running:
        while pending and len(running) < args.jobs:
            arm, seed = pending.pop(0)
            out = Path(args.out) / f"{arm}-seed{seed}"
            if (out / "summary.json").is_file():  # finished by an earlier invocation (another --scale, say)
                results[arm][seed] = final_record(out)
                continue
            command = [sys.executable, "-m", "align_train", "recipe=tiny/sft", f"train.seed={seed}",
                       f"train.latent_perturbation.seed={seed}", *EVAL, *arms[arm], f"output_dir={out}", *args.set]
            print("$", " ".join(command[1:]), file=sys.stderr, flush=True)
            running.append((arm, seed, out, subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)))
        if not running:
            break
        arm, seed, out, process = running.pop(0)
        if process.wait() != 0:
            raise SystemExit(f"{out}: the run failed (exit {process.returncode})")
        results[arm][seed] = final_record(out)

    header = ["run", *(label for _, label in COLUMNS)]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for arm in arms:
        for seed in args.seeds:
            cells = [f"{arm}, seed {seed}"] + [f"{results[arm][seed][key]:.3f}" for key, _ in COLUMNS]
            print("| " + " | ".join(cells) + " |")
        means = [f"**{statistics.mean(results[arm][s][key] for s in args.seeds):.3f}**" for key, _ in COLUMNS]
        print("| " + " | ".join([f"**{arm}, mean**", *means]) + " |")
    lower = sum(results[lapt][s]["masr"] < results["plain"][s]["masr"] for s in args.seeds)
    print(f"\nLAPT lowered MASR in {lower} of {len(args.seeds)} seeds.")
    summary = {arm: {seed: {key: r[key] for key, _ in COLUMNS} for seed, r in runs.items()}
               for arm, runs in results.items()}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{lapt}.json").write_text(json.dumps(
        {"layers": args.layers, "scale": args.scale, "seeds": args.seeds, "results": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
