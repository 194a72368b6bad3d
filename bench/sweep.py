"""A sweep over beta: reference log-probs computed once and shared (the cache) against independent runs.

Four DPO runs that differ only in beta. Independently (today's default), each run keeps a reference
copy and scores it in every step. As a sweep with the cache, each run sets
``objective.precompute_ref_log_probs=true``: the first scores the reference once over the data and
keeps the log-probs in ``ref_cache/`` beside the run directories; the other three read them. Every run
is its own process (as a ``--multirun`` on a cluster would start them), the two sweeps interleaved
point by point, over one whole epoch (a precomputation is charged for every row, so a shorter run
would charge it for rows it never trains on). The losses of each beta must agree between the two.
"""

from __future__ import annotations

from pathlib import Path

BETAS = (0.05, 0.1, 0.2, 0.4)


def part_sweep(work: Path, quick: bool) -> dict:
    from bench.run import median_step, one_epoch_dpo, run_case

    _, _, n_rows, steps, base = one_epoch_dpo(work, quick)
    cached_root, independent_root = work / "sweep-cached", work / "sweep-independent"
    cached, independent = {}, {}
    for beta in BETAS:  # interleaved, so drift in machine load hits both alike
        cached[beta] = run_case({"kind": "align", "overrides": [
            *base, f"objective.beta={beta}", "objective.precompute_ref_log_probs=true"],
            "out": str(cached_root / f"beta-{beta}")})
        independent[beta] = run_case({"kind": "align", "overrides": [*base, f"objective.beta={beta}"],
                                      "out": str(independent_root / f"beta-{beta}")})
    entries = sorted(p.name for p in (cached_root / "ref_cache").iterdir() if not p.name.startswith("."))
    loss_difference = max(abs(a - b) for beta in BETAS
                          for a, b in zip(cached[beta]["losses"], independent[beta]["losses"]))
    cached_wall = sum(r["wall_seconds"] for r in cached.values())
    independent_wall = sum(r["wall_seconds"] for r in independent.values())

    def row(r):
        return {"wall_s": r["wall_seconds"], "step_s": median_step(r), "final_loss": r["losses"][-1],
                "peak_above_baseline_mb": r["peak_above_baseline_mb"]}

    return {
        "setup": {"model_parameters": cached[BETAS[0]]["total"], "betas": list(BETAS), "rows": n_rows,
                  "steps_per_run": steps, "global_batch": 8, "objective": "dpo sigmoid, full tuning",
                  "cached": "precompute_ref_log_probs=true, ref_cache on (the default): one reference pass, shared",
                  "independent": "the default: a reference copy scored in every step of every run"},
        "wall_ratio_vs_independent": cached_wall / independent_wall,
        "cached_sweep_wall_s": cached_wall,
        "independent_sweep_wall_s": independent_wall,
        "cache_entries": len(entries),
        "first_run_wall_s": cached[BETAS[0]]["wall_seconds"],
        "later_runs_mean_wall_s": sum(cached[b]["wall_seconds"] for b in BETAS[1:]) / (len(BETAS) - 1),
        "loss_max_abs_difference": loss_difference,
        "losses_match": loss_difference < 1e-5,
        "runs": {"cached": {str(b): row(r) for b, r in cached.items()},
                 "independent": {str(b): row(r) for b, r in independent.items()}},
    }
