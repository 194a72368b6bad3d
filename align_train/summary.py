"""The run summary: the short report printed at the end of a run and written to summary.json.

Its before / after are the evaluator's scores of the starting and the final model (eval/step-N.json):
one measurement path for the hook, align-eval and the summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunResult:
    run_dir: str
    final_dir: str
    saved: str
    recipe: str
    objective: str
    tuning: str
    model: str
    parameters: dict
    data: dict
    steps: int = 0
    train_loss: float | None = None
    resumed_from: str | None = None
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    evaluations: list = field(default_factory=list)  # eval/step-N.json records, in step order
    seconds: float = 0.0
    # Settings whose default depends on the tuning strategy: {key: {"value", "origin"}} (train.strategy_settings)
    settings: dict = field(default_factory=dict)

    def render(self) -> str:
        p = self.parameters
        share = 100.0 * p["trainable"] / max(p["total"], 1)
        lines = [
            "",
            "=" * 72,
            f"align-train: {self.recipe}  ({self.objective} + {self.tuning})",
            f"  model       {self.model}",
            f"  parameters  {p['trainable']:,} trainable of {p['total']:,} ({share:.2f}%)",
            f"  data        {self.data.get('train_rows', 0) if not self.data.get('streamed') else 'streamed'} train "
            f"rows ({self.data.get('format')}), "
            f"{self.data.get('eval_rows', 0)} held out, {self.data.get('skipped_rows', 0)} skipped",
            *self._source_lines(),
            f"  training    {self.steps} steps in {self.seconds:.0f}s"
            + (f", final train loss {self.train_loss:.4f}" if self.train_loss is not None else "")
            + (f" (resumed from {self.resumed_from})" if self.resumed_from else ""),
            f"  saved       {self.final_dir}  [{self.saved}]",
        ]
        if self.settings:  # the values that depend on the tuning strategy, and where each came from
            lines.append("  settings    " + ", ".join(f"{key} {setting['value']:g} ({setting['origin']})"
                                                      for key, setting in self.settings.items()))
        if self.before or self.after:
            scored = [r for r in self.evaluations if r.get("step") is not None and not r.get("skipped")]
            if scored:  # the hook's step 0 and last scores are the before / after
                lines.append(f"  evaluation hook      step {scored[0]['step']:<4}->  step {scored[-1]['step']}"
                             "   (eval/step-N.json)")
            else:
                lines.append("  held-out metrics     before  ->  after")
            keys = [k for k in self.before if k in self.after] + [k for k in self.after if k not in self.before]
            keys += [k for k in self.before if k not in self.after]
            for key in keys:
                b, a = self.before.get(key), self.after.get(key)
                lines.append(f"    {key:<18} {_fmt(b):>8}  ->  {_fmt(a):<8}")
        failed = sorted({name for r in self.evaluations for name in r.get("failed") or []})
        if failed:
            lines.append(f"    failed suites: {', '.join(failed)} (see the errors in eval/step-N.json)")
        lines.append(f"  run directory {self.run_dir} (config.yaml, metrics.jsonl, summary.json)")
        lines.append("=" * 72)
        return "\n".join(lines)


    def _source_lines(self) -> list[str]:
        """One line per data source (rows it gave), and the bundled sets that made way for the user's own."""
        lines = []
        for name, source in self.data.get("sources", {}).items():
            if source.get("streamed"):
                rows = f"streamed, {source['share']:.0%} of the rows drawn"
            elif "train_rows" in source:
                rows = f"{source['train_rows']} train / {source['heldout_rows']} held out"
                rows += f", {source['share']:.0%} of the rows drawn" if "share" in source else ""
            else:
                rows = f"{source['valid_rows']} held out"
            skipped = f", {source['skipped_rows']} skipped" if source.get("skipped_rows") else ""
            lines.append(f"    {name:<18} {rows}{skipped}  ({source.get('layout')}: {source.get('path')})")
        for name in self.data.get("set_aside", {}):
            lines.append(f"    {name:<18} set aside (bundled example data; other sources are configured)")
        return lines


def data_summary(report: dict) -> dict:
    """What the summary says about the data: totals, and the rows of every source (data_report.json has more)."""
    keep = ("path", "layout", "format", "converted_to", "weight", "train_rows", "heldout_rows", "valid_rows",
            "skipped_rows", "streamed", "share")
    summary = {k: report[k] for k in ("format", "train_rows", "eval_rows", "skipped_rows", "streamed") if k in report}
    summary["sources"] = {name: {k: v for k, v in source.items() if k in keep}
                          for name, source in report.get("sources", {}).items()}
    if report.get("set_aside"):
        summary["set_aside"] = report["set_aside"]
    return summary


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"
