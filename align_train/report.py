"""The evaluation report: one self-contained HTML page for one run, or several side by side.

It is built from the runs' ``eval/step-N.json`` records only: headline metrics against the step,
the before / after table, every per-layer series found in a suite's details (drawn as curves over
the layers), the judges' label counts, a sample of generations with their labels, and failed
suites. Plots are inline SVG, the style is inline CSS; there is no script and nothing is fetched, so
the file opens offline. A run directory may come from anyone (a generation can hold HTML or
script): every string taken from it is escaped before it reaches the page.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from align_train.evaluation.evaluator import brief, judge_disagreements
from align_train.evaluation.suites import HEADLINE

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
MAX_LAYER_CURVES = 6  # steps drawn per run in a per-layer chart (the first, the last, and evenly between)
MAX_SAMPLES = 5  # generations shown per suite and step

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
td.text { white-space: pre-wrap; max-width: 40em; font-family: ui-monospace, monospace; font-size: .85em; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figcaption { font-size: .85em; color: #555; }
.up { color: #2a7a2a; } .down { color: #b02a2a; } .warn { color: #b02a2a; }
"""


def esc(value) -> str:
    """Text from a run directory, made inert in HTML (element content and attribute values)."""
    return escape(str(value), quote=True)


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def fmt(value) -> str:
    number = _number(value)
    return "-" if number is None else f"{number:.4g}"


# --------------------------------------------------------------------------- inline SVG


def line_chart(series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str,
               width: int = 440, height: int = 260) -> str:
    """A line chart as an inline <svg>: one polyline per series, the points titled with their values."""
    series = {name: [(x, y) for x, y in points if _number(x) is not None and _number(y) is not None]
              for name, points in series.items()}
    series = {name: sorted(points) for name, points in series.items() if points}
    if not series:
        return ""
    left, right, top, bottom = 64, 12, 12, 40
    legend = 16 * len(series) if len(series) > 1 else 0
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    if y0 == y1:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x):
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y):
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    out = [f'<svg width="{width}" height="{height + legend}" viewBox="0 0 {width} {height + legend}" '
           f'role="img" aria-label="{esc(ylabel)} against {esc(xlabel)}">',
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(yv):.1f}" y2="{py(yv):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 4}" y="{py(yv) + 4:.1f}" font-size="10" text-anchor="end">{yv:.4g}</text>')
    ticks = sorted(set(xs)) if len(set(xs)) <= 12 else [x0 + (x1 - x0) * i / 4 for i in range(5)]
    for xv in ticks:
        out.append(f'<text x="{px(xv):.1f}" y="{top + plot_h + 14}" font-size="10" text-anchor="middle">{xv:.4g}</text>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" font-size="11" text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text x="12" y="{top + plot_h / 2:.1f}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{esc(ylabel)}</text>')
    for index, (name, points) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        for x, y in points:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}">'
                       f'<title>{esc(name)}: {esc(xlabel)} {x:.4g}, {esc(ylabel)} {y:.6g}</title></circle>')
        if legend:
            ly = height + 12 + 16 * index
            out.append(f'<rect x="{left}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>')
            out.append(f'<text x="{left + 16}" y="{ly + 1}" font-size="11">{esc(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{esc(caption)}</figcaption></figure>" if svg else ""


# --------------------------------------------------------------------------- what the records hold


def _layer_key(key) -> int | None:
    try:
        return int(str(key))
    except ValueError:
        return None


def layered(details, path: tuple = ()) -> dict[tuple, dict[int, float]]:
    """Every per-layer series under a suite's details, found by shape, whatever the suite calls it.

    A dict whose keys are all layer numbers (at least two) is per-layer: if its values are numbers it
    is one series; if they are dicts of numbers, each of their keys is a series. Returns
    {(path..., metric): {layer: value}}.
    """
    found: dict[tuple, dict[int, float]] = {}
    if not isinstance(details, dict):
        return found
    layers = {_layer_key(k): v for k, v in details.items()}
    if len(layers) >= 2 and None not in layers:
        if all(_number(v) is not None or v is None for v in layers.values()):
            found[path] = {k: _number(v) for k, v in layers.items() if _number(v) is not None}
            return found
        if all(isinstance(v, dict) for v in layers.values()):
            metrics = {m for v in layers.values() for m, x in v.items() if _number(x) is not None}
            for metric in sorted(metrics):
                found[path + (metric,)] = {k: _number(v.get(metric)) for k, v in layers.items()
                                           if _number(v.get(metric)) is not None}
            return found
    for key, value in details.items():
        if isinstance(value, dict):
            found.update(layered(value, path + (str(key),)))
    return found


def spread(items: list, most: int) -> list:
    """At most ``most`` items: the first, the last and evenly between."""
    if len(items) <= most:
        return items
    picks = sorted({round(i * (len(items) - 1) / (most - 1)) for i in range(most)})
    return [items[i] for i in picks]


def metric_keys(runs: dict[str, list[dict]]) -> list[str]:
    """The headline metrics the records hold, in the registry's order, then any other metric a suite
    reported (a suite's ``metrics`` are also written at the top of the step's record)."""
    records = [r for rs in runs.values() for r in rs]
    keys = [k for k in HEADLINE if any(_number(r.get(k)) is not None for r in records)]
    for record in records:
        for result in record["suites"].values():
            for key in result.get("metrics") or {}:
                if key not in keys and _number(record.get(key)) is not None:
                    keys.append(key)
    return keys


def _short(run: str) -> str:
    return Path(run).name or run


# --------------------------------------------------------------------------- sections


def _table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """Cells are already HTML (escaped by the caller); the first ``text_columns`` are left-aligned."""
    head = "".join(f'<th class="{"text" if i < text_columns else ""}">{h}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"text" if i < text_columns else ""}">{c}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def before_after(runs: dict[str, list[dict]]) -> str:
    scored = {run: [r for r in records if not r.get("skipped")] for run, records in runs.items()}
    scored = {run: records for run, records in scored.items() if records}
    if not scored:
        return "<p>No step was scored.</p>"
    keys = metric_keys(scored)
    header = ["metric"]
    for run, records in scored.items():
        name = esc(_short(run)) + " " if len(scored) > 1 else ""
        header += [f"{name}before (step {records[0]['step']})", f"{name}after (step {records[-1]['step']})",
                   f"{name}change"]
    rows = []
    for key in keys:
        row = [esc(key)]
        for records in scored.values():
            first, last = _number(records[0].get(key)), _number(records[-1].get(key))
            change = "-" if first is None or last is None else f"{last - first:+.4g}"
            row += [fmt(first), fmt(last), change]
        rows.append(row)
    return _table(header, rows)


def metric_plots(runs: dict[str, list[dict]]) -> str:
    charts = []
    for key in metric_keys(runs):
        series = {_short(run): [(r["step"], r[key]) for r in records if key in r] for run, records in runs.items()}
        charts.append(figure(line_chart(series, "step", key), key))
    charts = [c for c in charts if c]
    return f'<div class="charts">{"".join(charts)}</div>' if charts else "<p>No headline metric was recorded.</p>"


def layer_plots(runs: dict[str, list[dict]]) -> str:
    """Per suite and per-layer series: one chart, one curve per (run, step)."""
    charts: dict[tuple, dict[str, list]] = {}
    for run, records in runs.items():
        shown = spread([r for r in records if r.get("suites")], MAX_LAYER_CURVES)
        for record in shown:
            for suite, result in sorted(record["suites"].items()):
                for path, values in layered(result.get("details") or {}).items():
                    name = f"step {record['step']}" if len(runs) == 1 else f"{_short(run)} step {record['step']}"
                    charts.setdefault((suite,) + path, {})[name] = sorted(values.items())
    if not charts:
        return "<p>No suite recorded per-layer results.</p>"
    out = [figure(line_chart(series, "layer", key[-1]), " / ".join(key)) for key, series in charts.items()]
    return f'<div class="charts">{"".join(out)}</div>'


def judge_tables(runs: dict[str, list[dict]]) -> str:
    """Label counts per judged suite (one row per run and step, with the judge that gave them), and any
    confusion matrix a suite recorded."""
    out = []
    suites = sorted({s for records in runs.values() for r in records for s, v in (r.get("suites") or {}).items()
                     if isinstance((v.get("details") or {}).get("labels"), dict)})
    for suite in suites:
        names = []
        rows = []
        for run, records in runs.items():
            for record in records:
                details = ((record.get("suites") or {}).get(suite) or {}).get("details") or {}
                counts = details.get("labels")
                if not isinstance(counts, dict):
                    continue
                names += [n for n in counts if n not in names]
                judge = details.get("judge") or {}
                identity = f"{judge.get('name', '?')} {judge.get('version', '')}".strip() if isinstance(judge, dict) else judge
                rows.append((run, record["step"], counts, identity))
        header = (["run"] if len(runs) > 1 else []) + ["step"] + [esc(n) for n in names] + ["judge"]
        body = [([esc(_short(run))] if len(runs) > 1 else []) + [esc(step)] + [esc(counts.get(n, 0)) for n in names]
                + [esc(identity)] for run, step, counts, identity in rows]
        out.append(f"<h3>{esc(suite)}</h3>" + _table(header, body, text_columns=1 if len(runs) > 1 else 0))
    for run, records in runs.items():
        for record in records:
            for suite, result in sorted((record.get("suites") or {}).items()):
                confusion = (result.get("details") or {}).get("confusion")
                if isinstance(confusion, dict) and all(isinstance(v, dict) for v in confusion.values()):
                    cols = sorted({c for v in confusion.values() for c in v})
                    body = [[esc(true)] + [esc(row.get(c, 0)) for c in cols] for true, row in confusion.items()]
                    out.append(f"<h3>{esc(suite)} confusion, {esc(_short(run))} step {esc(record['step'])}</h3>"
                               + _table(["true \\ judged"] + [esc(c) for c in cols], body))
    warnings = []
    for run, records in runs.items():
        warnings += judge_disagreements({f"{_short(run)} step {r['step']}": brief(r) for r in records})
    if len(runs) > 1:  # the runs' final scores, side by side, must come from one judge too
        warnings += judge_disagreements({_short(run): brief(records[-1]) for run, records in runs.items() if records})
    out += [f'<p class="warn">{esc(line)}</p>' for line in warnings]
    return "".join(out) or "<p>No suite recorded judge labels.</p>"


def sample_tables(runs: dict[str, list[dict]]) -> str:
    out = []
    for run, records in runs.items():
        scored = [r for r in records if r.get("suites")]
        for record in spread(scored, 2):
            for suite, result in sorted(record["suites"].items()):
                samples = [s for s in result.get("samples") or [] if isinstance(s, dict)][:MAX_SAMPLES]
                if not samples:
                    continue
                columns = [c for c in ("prompt", "response", "label", "refusal") if any(c in s for s in samples)]
                columns += sorted({c for s in samples for c in s} - set(columns))
                body = [[esc(s.get(c, "")) for c in columns] for s in samples]
                title = f"{_short(run)} · " if len(runs) > 1 else ""
                out.append(f"<h3>{esc(title)}{esc(suite)}, step {esc(record['step'])}</h3>"
                           + _table([esc(c) for c in columns], body, text_columns=len(columns)))
    return "".join(out) or "<p>No generations were kept.</p>"


def failures(runs: dict[str, list[dict]]) -> str:
    rows = []
    for run, records in runs.items():
        for record in records:
            if record.get("skipped"):
                rows.append([esc(_short(run)), esc(record["step"]), "(step skipped)", esc(record["skipped"])])
            for suite, error in sorted((record.get("errors") or {}).items()):
                if not suite.endswith("_traceback"):
                    rows.append([esc(_short(run)), esc(record["step"]), esc(suite), esc(error)])
    if not rows:
        return ""
    return "<h2>Failed suites and skipped steps</h2>" + _table(["run", "step", "suite", "error"], rows, 4)


def _well_formed(record) -> dict | None:
    """A step record with the shapes the sections read (a file from elsewhere may hold anything), or None."""
    if not isinstance(record, dict) or _number(record.get("step")) is None:
        return None
    suites = record.get("suites") if isinstance(record.get("suites"), dict) else {}
    suites = {str(name): {**result, "details": result.get("details") if isinstance(result.get("details"), dict)
                          else {}, "samples": result.get("samples") if isinstance(result.get("samples"), list) else []}
              for name, result in suites.items() if isinstance(result, dict)}
    errors = record.get("errors") if isinstance(record.get("errors"), dict) else {}
    judges = record.get("judges") if isinstance(record.get("judges"), dict) else {}
    judges = {k: v for k, v in judges.items() if isinstance(v, dict) and {"name", "version"} <= set(v)}
    return {**record, "suites": suites, "errors": errors, "judges": judges}


def render_report(runs: dict[str, list[dict]], title: str) -> str:
    """The HTML page for ``runs`` ({run name: its eval/step-N.json records, in step order})."""
    runs = {str(run): [r for r in map(_well_formed, records) if r is not None] for run, records in runs.items()}
    listing = "".join(f"<li>{esc(run)}: steps {esc(', '.join(str(r.get('step')) for r in records)) or 'none'}</li>"
                      for run, records in runs.items())
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1><ul>{listing}</ul>",
        "<h2>Before and after</h2>", before_after(runs),
        "<h2>Metrics against the step</h2>", metric_plots(runs),
        "<h2>Per layer</h2>", layer_plots(runs),
        "<h2>Judge labels</h2>", judge_tables(runs),
        "<h2>Generations</h2>", sample_tables(runs),
        failures(runs),
        "</body></html>",
    ]) + "\n"
