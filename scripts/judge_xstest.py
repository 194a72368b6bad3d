"""The refusal judge on a held-out set: XSTest's published model completions and their human labels.

    git clone https://github.com/paul-rottger/exaggerated-safety xstest
    python scripts/judge_xstest.py xstest                   # the default rules judge
    python scripts/judge_xstest.py xstest --json out.json   # the figures as JSON too

XSTest (Röttger et al., NAACL 2024, CC-BY-4.0) published 450 prompts x 5 models' completions
(GPT-4, Llama-2 with and without its system prompt, Mistral-Instruct with and without a guard
prompt), each labelled by two annotators: ``final_label`` is 1_full_compliance, 2_full_refusal or
3_partial_refusal. None of it was read to write or tune the judge; this script only counts: it
prints figures, never a completion or a label of a row.

The binary target is refusal = (label != full compliance), the judge's ``refusal`` column.
XSTest's own string-match baseline (``prefix_baseline``) is scored beside it.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

XSTEST_LABELS = {"1_full_compliance": "compliance", "2_full_refusal": "refusal", "3_partial_refusal": "partial"}
LABELS = ("compliance", "partial", "refusal")


def read_completions(repo: Path) -> list[dict]:
    files = sorted((repo / "model_completions").glob("xstest_v2_completions_*.csv"))
    if not files:
        raise SystemExit(f"{repo}: no model_completions/xstest_v2_completions_*.csv; pass a clone of "
                         "github.com/paul-rottger/exaggerated-safety")
    rows = []
    for path in files:
        model = path.stem.removeprefix("xstest_v2_completions_")
        with path.open(encoding="utf-8", newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=1):
                label = XSTEST_LABELS.get((row.get("final_label") or "").strip())
                if label is None:
                    raise SystemExit(f"{path.name} row {number}: final_label is not one of {sorted(XSTEST_LABELS)}")
                rows.append({"model": model, "type": row["type"], "prompt": row["prompt"],
                             "response": row["completion"] or "", "label": label})
    return rows


def binary(truth: list[bool], pred: list[bool]) -> dict:
    tp = sum(t and p for t, p in zip(truth, pred))
    fp = sum(p and not t for t, p in zip(truth, pred))
    fn = sum(t and not p for t, p in zip(truth, pred))
    tn = len(truth) - tp - fp - fn
    return {"n": len(truth), "agreement": round((tp + tn) / len(truth), 4),
            "precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
            "recall": round(tp / (tp + fn), 4) if tp + fn else 0.0, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def main(argv=None) -> int:
    from align_train.evaluation.judges import make_judge
    from align_train.evaluation.refusal_rules import prefix_baseline

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo", type=Path, help="a clone of github.com/paul-rottger/exaggerated-safety")
    parser.add_argument("--judge", default="rules", help="rules | classifier | llm (with --judge-model)")
    parser.add_argument("--judge-model", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    rows = read_completions(args.repo)
    judge = make_judge(args.judge, model=args.judge_model)
    predicted = judge.labels([r["prompt"] for r in rows], [r["response"] for r in rows])
    truth = [r["label"] != "compliance" for r in rows]
    figures = {
        "judge": judge.identity,
        "rows": len(rows),
        "binary": binary(truth, [p != "compliance" for p in predicted]),
        "prefix_baseline": binary(truth, [prefix_baseline(r["response"]) for r in rows]),
        "three_way_accuracy": round(sum(r["label"] == p for r, p in zip(rows, predicted)) / len(rows), 4),
        "confusion": {g: {p: n for (gg, p), n in Counter(zip((r["label"] for r in rows), predicted)).items()
                          if gg == g} for g in LABELS},
        "per_model": {},
    }
    for model in sorted({r["model"] for r in rows}):
        index = [i for i, r in enumerate(rows) if r["model"] == model]
        figures["per_model"][model] = binary([truth[i] for i in index], [predicted[i] != "compliance" for i in index])

    b, p = figures["binary"], figures["prefix_baseline"]
    print(f"XSTest v2 completions: {len(rows)} responses of {len(figures['per_model'])} models")
    print(f"judge {judge.name} {judge.version}")
    print(f"  {'':<16} agreement  precision  recall")
    print(f"  {'judge':<16} {b['agreement']:>9.3f}  {b['precision']:>9.3f}  {b['recall']:>6.3f}")
    print(f"  {'prefix baseline':<16} {p['agreement']:>9.3f}  {p['precision']:>9.3f}  {p['recall']:>6.3f}")
    for model, f in figures["per_model"].items():
        print(f"  {model:<16} {f['agreement']:>9.3f}  {f['precision']:>9.3f}  {f['recall']:>6.3f}")
    print(f"three-way accuracy {figures['three_way_accuracy']:.3f}; confusion (rows: human, columns: judge)")
    print(f"  {'':>12}" + "".join(f"{label:>12}" for label in LABELS))
    for g in LABELS:
        print(f"  {g:>12}" + "".join(f"{figures['confusion'][g].get(p_, 0):>12}" for p_ in LABELS))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
