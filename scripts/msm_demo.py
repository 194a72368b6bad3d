#!/usr/bin/env python
"""The model-spec midtraining demonstration: the same fine-tuning with and without midtraining, on held-out probes.

Runs recipes/tiny/msm_pipeline.yaml twice (stages midtrain -> sft, and the control: sft only, stage 0 disabled)
and scores the base model, the midtrained model, and both fine-tuned models on the held-out probes of
data/tiny/msm/: for each probe, log p(consistent) - log p(inconsistent) with the broader value (privacy), summed
over the completion's tokens; reported as the mean margin and the share of probes with a positive margin.
Repeated for each training seed (--seeds); extra arguments are Hydra overrides for every run. Writes
OUT/msm_demo.json.

    OMP_NUM_THREADS=1 python scripts/msm_demo.py --out runs/msm-demo --seeds 0 1 2 [overrides...]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROBES = {"statements": ROOT / "data/tiny/msm/probes_statements.jsonl", "chat": ROOT / "data/tiny/msm/probes_chat.jsonl"}


def probe_scores(model_dir: str) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align_train.evaluation.metrics import preference_metrics, preference_scores

    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    out = {}
    for name, path in PROBES.items():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        m = preference_metrics(preference_scores(model, tokenizer, rows))
        out[name] = {"margin": m["logprob_margin"], "accuracy": m["preference_accuracy"], "probes": len(rows)}
    return out


def one_seed(out: Path, seed: int, overrides: list[str], recipe: str) -> dict:
    runs = {"msm": [], "control": ["stages.0.enabled=false"]}
    for name, extra in runs.items():
        subprocess.run([sys.executable, "-m", "align_train", f"recipe={recipe}", f"output_dir={out / name}",
                        f"train.seed={seed}", *extra, *overrides], check=True)
    models = {
        "base": str(ROOT / "data/tiny-llama"),
        "midtrained (msm stage 0)": str(out / "msm/stages/0-midtrain/final"),
        "control: sft only": str(out / "control/stages/1-sft/final"),
        "msm: midtrain -> sft": str(out / "msm/stages/1-sft/final"),
    }
    return {name: probe_scores(path) for name, path in models.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/msm-demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--recipe", default="tiny/msm_pipeline", help="a pipeline recipe whose stage 0 is midtraining")
    args, overrides = parser.parse_known_args()
    out = Path(args.out)
    per_seed = {seed: one_seed(out / f"seed-{seed}", seed, overrides, args.recipe) for seed in args.seeds}
    names = list(next(iter(per_seed.values())))
    print(f"\n{'model':<28} " + "  ".join(f"{k + ' margin':>18} {k + ' acc':>14}" for k in PROBES)
          + f"   (mean over seeds {args.seeds})")
    for name in names:
        cells = []
        for k in PROBES:
            margin = statistics.mean(r[name][k]["margin"] for r in per_seed.values())
            acc = statistics.mean(r[name][k]["accuracy"] for r in per_seed.values())
            cells.append(f"{margin:>18.3f} {acc:>14.3f}")
        print(f"{name:<28} " + "  ".join(cells))
    diffs = {k: [r["msm: midtrain -> sft"][k]["margin"] - r["control: sft only"][k]["margin"] for r in per_seed.values()]
             for k in PROBES}
    print("msm - control margin per seed: " + "; ".join(f"{k} " + ", ".join(f"{d:+.3f}" for d in v)
                                                       for k, v in diffs.items()))
    report = {"recipe": args.recipe, "overrides": overrides, "seeds": args.seeds, "results": per_seed, "msm_minus_control_margin": diffs}
    (out / "msm_demo.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
