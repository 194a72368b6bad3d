"""results.md and PNG plots from the JSON results of ``bench.run`` (rerunnable on its own)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(results: Path, part: str) -> dict | None:
    path = results / f"{part}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _environment_line(env: dict) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    device = env["gpu"] or f"{env['cpu']} ({env['cpu_count']} cores, OMP_NUM_THREADS={env['threads']})"
    return f"{device}; Python {env['python']}; {packages}"


def _plot(path: Path, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, points in series.items():
        ax.plot(*zip(*points), marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: Path) -> Path:
    lines = ["# Benchmark results", "", "Written by `make bench` (`python -m bench.run`); figures in the JSON files beside this one.", ""]
    overhead = _load(results, "overhead")
    if overhead:
        lines += [
            "## Overhead against plain TRL (same DPO run)", "", _environment_line(overhead["environment"]), "",
            "| | step time (s, median) | wall (s) | peak RSS (MB) | of which the run's own (MB) |",
            "| --- | --- | --- | --- | --- |",
            f"| align-train | {overhead['align_train_step_s']:.4f} | {overhead['align_train_wall_s']:.1f} | "
            f"{overhead['peak_rss_mb']['align_train']:.0f} | {overhead['peak_above_baseline_mb']['align_train']:.0f} |",
            f"| plain TRL `DPOTrainer` | {overhead['plain_trl_step_s']:.4f} | {overhead['plain_trl_wall_s']:.1f} | "
            f"{overhead['peak_rss_mb']['plain_trl']:.0f} | {overhead['peak_above_baseline_mb']['plain_trl']:.0f} |", "",
            f"`overhead_ratio` = {overhead['overhead_ratio']:.3f}; loss curves identical: "
            f"{overhead['loss_curves_identical']} (max |difference| {overhead['loss_max_abs_difference']:.2e}). "
            f"Setup: {overhead['setup']}.", "",
        ]
        _plot(results / "overhead_losses.png",
              {name: list(enumerate(values, 1)) for name, values in overhead["losses"].items()}, "step", "DPO loss")
    defaults = _load(results, "defaults")
    if defaults:
        lines += ["## What the defaults buy", "", _environment_line(defaults["environment"]), "",
                  "| case | step time (s) | wall (s) | peak RSS above libraries (MB) | trainable | final loss |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, row in defaults["cases"].items():
            lines.append(f"| {name} | {row['step_s']:.4f} | {row['wall_s']:.1f} | {row['peak_above_baseline_mb']:.0f} | "
                         f"{row['trainable']:,} | {row['final_loss']:.4f} |")
        lines += ["", "| comparison | step-time ratio | wall ratio | peak-memory ratio | final-loss difference |",
                  "| --- | --- | --- | --- | --- |"]
        for name, r in defaults["ratios"].items():
            lines.append(f"| {name} | {r['step_time_ratio']:.3f} | {r['wall_ratio']:.3f} | "
                         f"{r['peak_memory_ratio']:.3f} | {r['final_loss_difference']:.2e} |")
        lines.append("")
    scaling = _load(results, "scaling")
    if scaling:
        lines += ["## Cost growth (DPO)", "", _environment_line(scaling["environment"]), "",
                  "| sequence length | global batch | processes | step time (s) | tokens/s | peak RSS above libraries, per process (MB) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for row in scaling["by_sequence_length"] + scaling["by_batch_size"] + scaling["processes"]:
            lines.append(f"| {row['sequence_length']} | {row['global_batch']} | {row['processes']} | "
                         f"{row['step_s']:.4f} | {row['tokens_per_s']:.0f} | {row['peak_above_baseline_mb']:.0f} |")
        lines.append("")
        _plot(results / "scaling_sequence_length.png",
              {"step time (s)": [(r["sequence_length"], r["step_s"]) for r in scaling["by_sequence_length"]]},
              "sequence length (batch 8)", "step time (s)")
        _plot(results / "scaling_batch_size.png",
              {"step time (s)": [(r["global_batch"], r["step_s"]) for r in scaling["by_batch_size"]]},
              "global batch (length 128)", "step time (s)")
        _plot(results / "scaling_memory.png",
              {"by length": [(r["sequence_length"], r["peak_above_baseline_mb"]) for r in scaling["by_sequence_length"]]},
              "sequence length (batch 8)", "peak RSS above libraries (MB)")
    nest = _load(results, "nest")
    if nest:
        lines += ["## NeST against LoRA and full fine-tuning", "", _environment_line(nest["environment"]), ""]
        lines += nest.get("table_md", [])
        lines.append("")
    sweep = _load(results, "sweep")
    if sweep:
        lines += ["## A beta sweep sharing the reference cache", "", _environment_line(sweep["environment"]), "",
                  "| beta | cached sweep: wall (s) | step (s) | independent: wall (s) | step (s) | final loss |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for beta, row in sweep["runs"]["cached"].items():
            other = sweep["runs"]["independent"][beta]
            lines.append(f"| {beta} | {row['wall_s']:.1f} | {row['step_s']:.4f} | {other['wall_s']:.1f} | "
                         f"{other['step_s']:.4f} | {row['final_loss']:.4f} |")
        lines += ["", f"`wall_ratio_vs_independent` = {sweep['wall_ratio_vs_independent']:.3f} "
                  f"({sweep['cached_sweep_wall_s']:.1f} s vs {sweep['independent_sweep_wall_s']:.1f} s); losses match: "
                  f"{sweep['losses_match']} (max |difference| {sweep['loss_max_abs_difference']:.2e}). "
                  f"Setup: {sweep['setup']}.", ""]
        _plot(results / "sweep_wall.png",
              {kind: [(float(beta), row["wall_s"]) for beta, row in sweep["runs"][kind].items()]
               for kind in ("cached", "independent")}, "beta (runs in this order)", "wall clock per run (s)")
    gpu = _load(results, "gpu")
    if gpu and gpu.get("skipped"):
        lines += ["## GPU", "", gpu["skipped"], ""]
    elif gpu:
        lines += ["## GPU", "", f"{gpu['device']}; bf16, length {gpu['sequence_length']}, batch {gpu['global_batch']}", "",
                  "| vocabulary | objective | variant | Liger | step (s) | tokens/s | MFU | peak GPU memory (MB) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in gpu["rows"]:
            mfu = "-" if row["mfu"] is None else f"{row['mfu']:.1%}"
            lines.append(f"| {row.get('vocab', 'small')} | {row['objective']} | {row.get('variant', 'default')} | "
                         f"{row['liger']} | {row['step_s']:.3f} | {row['tokens_per_s']:.0f} | {mfu} | "
                         f"{row['gpu_peak_mb']:.0f} |")
        if gpu.get("sweep"):
            lines += ["", f"Beta sweep ({len(gpu['sweep']['betas'])} runs) sharing the reference cache: wall "
                      f"{gpu['sweep']['wall_ratio_vs_independent']:.3f}x four independent runs."]
        lines.append("")
    path = results / "results.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"[bench] {path}", file=sys.stderr)
    return path


if __name__ == "__main__":
    write_report(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results")
