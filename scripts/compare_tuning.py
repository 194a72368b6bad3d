#!/usr/bin/env python
"""Train the tiny model with several tuning strategies on the same data and steps, and print a table.

Each strategy runs ``recipe=tiny/nest`` (SFT on refusals + helpful answers, the evaluation hook
on the held-out prompts) with ``tuning=<name>`` and its own learning rate, as a separate
``python -m align_train`` process; the table is read from each run's summary.json.

    python scripts/compare_tuning.py --out runs/compare            # full, lora, nest, nest-random
    python scripts/compare_tuning.py --out runs/compare nest:1e-2 lora:3e-3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# name -> learning rate: each strategy at a rate that suits it (full: the tiny SFT recipe's; LoRA: 10x,
# as usual for adapters; NeST: the tiny NeST recipe's, a few thousand vectors started at zero).
# nest-random is the control: NeST's budget on as many neurons per layer drawn at random.
DEFAULTS = {"full": 3e-4, "lora": 3e-3, "nest": 1e-2, "nest-random": 1e-2}
EXTRA = {"nest-random": ["tuning=nest", "tuning.selection=random"]}
COLUMNS = [("refusal_rate", "refusal (harmful)"), ("over_refusal_rate", "over-refusal (borderline)"),
           ("perplexity", "perplexity"), ("preference_accuracy", "pref. accuracy")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="strategy[:learning_rate] (default: full lora nest nest-random)")
    parser.add_argument("--out", default="runs/compare", help="one run directory per strategy under this")
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for every run")
    args = parser.parse_args()
    runs = [r.split(":") for r in args.runs] or [[k, str(v)] for k, v in DEFAULTS.items()]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rows = []
    for name, *lr in runs:
        lr = lr[0] if lr else str(DEFAULTS[name])
        out = Path(args.out) / name
        tuning = EXTRA.get(name, [f"tuning={name}"])
        command = [sys.executable, "-m", "align_train", "recipe=tiny/nest", *tuning,
                   f"train.learning_rate={lr}", f"output_dir={out}", *args.set]
        print("$", " ".join(command[1:]), file=sys.stderr, flush=True)
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        summary = json.loads((out / "summary.json").read_text())
        rows.append((name, lr, summary))

    header = ["tuning", "lr", "trainable params"] + [f"{label}: before -> after" for _, label in COLUMNS]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for name, lr, s in rows:
        cells = [name, lr, f"{s['parameters']['trainable']:,} ({s['parameters']['trainable'] / s['parameters']['total']:.2%})"]
        for key, _ in COLUMNS:
            before, after = s["before"].get(key), s["after"].get(key)
            cells.append(f"{before:.3f} -> {after:.3f}" if before is not None and after is not None else "-")
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
