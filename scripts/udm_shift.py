#!/usr/bin/env python
"""What BCO's underlying-distribution matching does on the tiny model, per prompt slice.

Feedback built from the bundled preference pairs so that the undesirable answers come from another
prompt distribution than the desirable ones: of 480 training pairs every one gives its chosen answer
as desirable, but only the harmful pairs (and about 1 in 10 benign / borderline ones) give their
rejected answer as undesirable. The other 120 pairs are held out.

The script prints (and writes to OUT/udm_shift.json):
  - the UDM classifier's held-out balanced accuracy and the mean weight of the undesirable rows of
    each slice (benign / borderline vs harmful), as BCO's own code computes them before training;
  - for each seed (the order of the training rows), ``recipe=tiny/bco`` trained one epoch with and without UDM, and the implicit-reward
    margin and accuracy (policy vs the starting model, as the evaluation hook's preference suite
    computes them) on the held-out benign / borderline pairs and on the held-out harmful pairs.

    python scripts/udm_shift.py --out runs/udm-shift                 # order seed 2
    python scripts/udm_shift.py --out runs/udm-shift --seeds 2 3 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

SLICES = ("benign", "harmful")  # benign holds the benign and borderline pairs (helpful vs over-refusal)


def shifted_feedback(directory: Path, order_seed: int = 2) -> dict[str, str]:
    """Write the shifted feedback, in an order drawn with ``order_seed``, and the held-out slices; returns
    their paths by name (train, benign, harmful). The split and the kept rows do not depend on the seed."""
    from align_train.paths import DATA_DIR

    rows = [json.loads(line) for line in (DATA_DIR / "tiny" / "preference.jsonl").read_text().splitlines()]
    random.Random(0).shuffle(rows)
    heldout, train = rows[:120], rows[120:]
    keep = random.Random(1)
    feedback = [{"prompt": r["prompt"], "completion": r["chosen"], "label": True, "category": r["category"]}
                for r in train]
    feedback += [{"prompt": r["prompt"], "completion": r["rejected"], "label": False, "category": r["category"]}
                 for r in train if r["category"] == "harmful" or keep.random() < 0.1]
    random.Random(order_seed).shuffle(feedback)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"train": directory / "shifted.jsonl", "benign": directory / "heldout_benign.jsonl",
             "harmful": directory / "heldout_harmful.jsonl"}
    paths["train"].write_text("".join(json.dumps(r) + "\n" for r in feedback))
    paths["benign"].write_text("".join(json.dumps(r) + "\n" for r in heldout if r["category"] != "harmful"))
    paths["harmful"].write_text("".join(json.dumps(r) + "\n" for r in heldout if r["category"] == "harmful"))
    return {name: str(path) for name, path in paths.items()}


def overrides(paths: dict[str, str], udm_on: bool) -> list[str]:
    return ["recipe=tiny/bco", f"data.train.tiny_preference.path={paths['train']}",
            "data.train.tiny_preference.format=feedback", "data.eval_fraction=0", f"objective.udm.enabled={udm_on}",
            "train.save_steps=0", "eval=none"]


def udm_weights_by_slice(paths: dict[str, str]) -> dict:
    """BCO's own preparation step on the starting model: the weight column, averaged per slice."""
    from align_train.composition import compose
    from align_train.data import load_data
    from align_train.models import load_model, load_tokenizer
    from align_train.objectives import make_objective
    from align_train.objectives.bco_loss import WEIGHT_COLUMN
    from align_train.objectives.udm import prompt_key

    cfg = compose(overrides(paths, True))
    objective = make_objective(cfg.objective)
    data = load_data(cfg.data, objective.accepts, objective.name)
    data = objective.prepare(load_model(cfg.model), load_tokenizer(cfg.model), data, None)
    rows = [json.loads(line) for line in Path(paths["train"]).read_text().splitlines()]
    category = {prompt_key(r["prompt"]): r["category"] for r in rows}
    weights: dict[str, list[float]] = {name: [] for name in SLICES}
    for prompt, label, weight in zip(data.train["prompt"], data.train["label"], data.train[WEIGHT_COLUMN]):
        if not label:
            weights["harmful" if category[prompt_key(prompt)] == "harmful" else "benign"].append(weight)
    return {
        "classifier_balanced_accuracy": data.report["udm"]["classifier_balanced_accuracy"],
        "undesirable_rows": {name: len(w) for name, w in weights.items()},
        "mean_weight": {name: sum(w) / len(w) for name, w in weights.items()},
    }


def reward_metrics(final_dir: str, paths: dict[str, str]) -> dict[str, dict]:
    """Implicit-reward margin and accuracy of the trained model against the starting one, per slice."""
    import torch

    from align_train.composition import compose
    from align_train.evaluation.metrics import preference_metrics, preference_scores
    from align_train.models import load_model, load_tokenizer

    model_cfg = compose(["recipe=tiny/bco"]).model
    tokenizer, base = load_tokenizer(model_cfg), load_model(model_cfg)
    trained = load_model(_with_path(model_cfg, final_dir))
    out = {}
    with torch.no_grad():
        for name in SLICES:
            rows = [json.loads(line) for line in Path(paths[name]).read_text().splitlines()]
            metrics = preference_metrics(preference_scores(trained, tokenizer, rows),
                                         preference_scores(base, tokenizer, rows))
            out[name] = {"pairs": len(rows), "reward_margin": metrics["reward_margin"],
                         "reward_accuracy": metrics["reward_accuracy"]}
    return out


def _with_path(model_cfg, path: str):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
    cfg.name_or_path = path
    return cfg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/udm-shift", help="data, one run directory per seed and setting")
    parser.add_argument("--seeds", nargs="*", type=int, default=[2],
                        help="order of the training rows for each pair of runs (what varies a run here: the rows "
                             "are trained in file order, so train.seed changes nothing)")
    args = parser.parse_args()

    import torch

    from align_train.composition import compose, setup
    from align_train.train import run

    setup()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    out = Path(args.out)
    paths = shifted_feedback(out / "data")
    report = {"weights": udm_weights_by_slice(paths), "runs": {}}  # the weights do not depend on the order
    print(json.dumps(report["weights"]), flush=True)
    for seed in args.seeds:
        for udm_on in (False, True):
            name = f"seed{seed}-udm-{'on' if udm_on else 'off'}"
            ordered = shifted_feedback(out / f"data-{seed}", seed)
            result = run(compose([*overrides(ordered, udm_on), f"output_dir={out / name}"]))
            report["runs"][name] = {"seed": seed, "udm": udm_on, "steps": result.steps,
                                    **reward_metrics(result.final_dir, paths)}
    (out / "udm_shift.json").write_text(json.dumps(report, indent=2) + "\n")

    w = report["weights"]
    print(f"UDM classifier held-out balanced accuracy {w['classifier_balanced_accuracy']:.2f}; mean weight of "
          f"undesirable rows: benign / borderline {w['mean_weight']['benign']:.2f} "
          f"({w['undesirable_rows']['benign']} rows), harmful {w['mean_weight']['harmful']:.2f} "
          f"({w['undesirable_rows']['harmful']} rows)")
    print("| seed | UDM | steps | benign margin | benign accuracy | harmful margin | harmful accuracy |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in report["runs"].values():
        print(f"| {r['seed']} | {'on' if r['udm'] else 'off'} | {r['steps']} | {r['benign']['reward_margin']:.1f} | "
              f"{r['benign']['reward_accuracy']:.2f} | {r['harmful']['reward_margin']:.1f} | "
              f"{r['harmful']['reward_accuracy']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
