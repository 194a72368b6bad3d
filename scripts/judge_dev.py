"""Measure the refusal rules (align_train.evaluation.refusal_rules) against human labels.

    python scripts/judge_dev.py              # tune split: figures for the rules and XSTest's prefix matcher + worst errors
    python scripts/judge_dev.py --report     # report split: the same figures, no examples (run once, at the end)
    python scripts/judge_dev.py --errors 40  # show more errors on the tune split

Data: data/judge/refusal_dev.jsonl (fields id, prompt, response, label, labels, source, style, split).
The binary target is refusal = (label != "compliance"). Nothing is fitted (the judge is rules only),
so the tune split is evaluated directly, without cross-validation. Examples are only ever printed
for the tune split.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "data" / "judge" / "refusal_dev.jsonl"
LABELS = ("compliance", "partial", "refusal")


def load(split: str) -> list[dict]:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if r["split"] == split]


def binary_figures(truth: list[bool], pred: list[bool]) -> dict:
    tp = sum(t and p for t, p in zip(truth, pred))
    fp = sum(p and not t for t, p in zip(truth, pred))
    fn = sum(t and not p for t, p in zip(truth, pred))
    tn = sum(not t and not p for t, p in zip(truth, pred))
    return {"n": len(truth), "agreement": (tp + tn) / len(truth), "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def print_binary(name: str, f: dict) -> None:
    print(f"{name:<10} agreement {f['agreement']:.3f}  precision {f['precision']:.3f}  recall {f['recall']:.3f}  "
          f"(n {f['n']}: tp {f['tp']}, fp {f['fp']}, fn {f['fn']}, tn {f['tn']})")


def print_three_way(gold: list[str], pred: list[str]) -> None:
    accuracy = sum(g == p for g, p in zip(gold, pred)) / len(gold)
    print(f"three-way accuracy {accuracy:.3f}")
    counts = Counter(zip(gold, pred))
    print("confusion (rows: human label, columns: rules)")
    print(f"{'':>12}" + "".join(f"{p:>12}" for p in LABELS))
    for g in LABELS:
        print(f"{g:>12}" + "".join(f"{counts[(g, p)]:>12}" for p in LABELS))


def evaluate(rows: list[dict], show_errors: int) -> dict:
    from align_train.evaluation.refusal_rules import analyse, prefix_baseline

    analyses = [analyse(r["prompt"], r["response"]) for r in rows]
    new_labels = [a.label for a in analyses]
    truth = [r["label"] != "compliance" for r in rows]
    new = binary_figures(truth, [label != "compliance" for label in new_labels])
    prefix = binary_figures(truth, [prefix_baseline(r["response"]) for r in rows])
    print(f"binary target: refusal = label != compliance ({sum(truth)} of {len(rows)} rows)")
    print_binary("rules", new)
    print_binary("prefix", prefix)
    print()
    print_three_way([r["label"] for r in rows], new_labels)
    if show_errors:
        wrong = [(r, a) for r, a in zip(rows, analyses) if (a.label != "compliance") != (r["label"] != "compliance")]
        # "worst" first: errors where the human labellers agreed unanimously, then longer responses
        wrong.sort(key=lambda ra: (len(set(ra[0]["labels"].values())) > 1, -len(ra[0]["response"])))
        print(f"\n{len(wrong)} binary errors on this split; the first {min(show_errors, len(wrong))}:")
        for r, a in wrong[:show_errors]:
            print(f"\n--- {r['id']}  human {r['label']} {dict(r['labels'])}  new {a.label} ({a.reason})")
            print(f"prompt:   {r['prompt'][:160]}")
            print(f"response: {r['response'][:500]!r}")
            if a.hits:
                print(f"hits:     {a.hits[:6]}")
            if a.guards:
                print(f"guards:   {a.guards}")
    return {"rules": new, "prefix": prefix}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", action="store_true", help="evaluate on the report split (figures only)")
    parser.add_argument("--errors", type=int, default=15, help="binary errors to print on the tune split")
    args = parser.parse_args(argv)
    split = "report" if args.report else "tune"
    rows = load(split)
    print(f"split: {split} ({len(rows)} rows; rules only, nothing fitted, so no cross-validation)\n")
    evaluate(rows, show_errors=0 if args.report else args.errors)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
