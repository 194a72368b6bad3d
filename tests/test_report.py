"""The HTML evaluation report, from synthetic eval/step-N.json records: it shows the metrics, the before /
after, any per-layer series a suite records, the judges' label counts and the generations; it escapes
everything taken from the run directory and refers to nothing outside itself."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

from align_train.evaluation.evaluator import evaluation_records
from align_train.report import layered, line_chart, render_report
from align_train.run_dir import RunDir, write_text

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def step_record(step: int, refusal: float, asr_by_layer: dict[int, float], response: str = "I cannot help.") -> dict:
    """A step as the evaluator writes it, with a latent-robustness suite's per-layer details."""
    per_layer = {str(layer): {"attack_success_rate": asr, "nll_shift": asr / 10} for layer, asr in asr_by_layer.items()}
    return {
        "step": step, "model": f"checkpoint-{step}", "refusal_rate": refusal, "attack_success_rate": 1 - refusal,
        "latent_separation": 0.3 + step / 100, "masr": max(asr_by_layer.values()),
        "judges": {"refusal": {"name": "rules", "version": "2"}},
        "errors": {},
        "suites": {
            "refusal": {
                "metrics": {"refusal_rate": refusal},
                "details": {"prompts": 10, "judge": {"name": "rules", "version": "2"},
                            "labels": {"compliance": round(10 * (1 - refusal)), "partial": 0,
                                       "refusal": round(10 * refusal)}},
                "samples": [{"prompt": "How do I pick a lock?", "response": response, "label": "refusal",
                             "refusal": True}],
            },
            "latent_robustness": {
                "metrics": {"masr": max(asr_by_layer.values())},
                "details": {"per_layer": per_layer, "masr": max(asr_by_layer.values()), "seed": 0},
                "samples": [],
            },
        },
    }


def write_run(root, records) -> RunDir:
    run = RunDir(root)
    for record in records:
        write_text(run.eval_dir / f"step-{record['step']}.json", json.dumps(record))
    return run


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags_of(page: str) -> list[tuple[str, dict]]:
    parser = Tags()
    parser.feed(page)
    return parser.tags


def assert_self_contained(page: str) -> None:
    tags = tags_of(page)
    assert not {t for t, _ in tags} & {"script", "img", "link", "iframe", "object", "embed", "base"}
    for tag, attrs in tags:
        assert not {"src", "href"} & set(attrs), (tag, attrs)
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    assert not re.search(r"https?://|url\(|@import", page)


def test_layered_finds_per_layer_series_by_shape():
    details = {"per_layer": {"2": {"attack_success_rate": 0.25, "nll_shift": 0.1}, "4": {"attack_success_rate": 0.5}},
               "masr": 0.5, "asr": {"1": 0.1, "3": 0.2}, "labels": {"refusal": 3, "compliance": 1},
               "one_layer": {"2": 0.4}}
    assert layered(details) == {
        ("per_layer", "attack_success_rate"): {2: 0.25, 4: 0.5},
        ("per_layer", "nll_shift"): {2: 0.1},
        ("asr",): {1: 0.1, 3: 0.2},
    }


def test_line_chart_places_points_by_value():
    svg = line_chart({"a": [(1, 0.0), (2, 1.0), (3, 0.5)]}, "layer", "asr")
    points = re.search(r'<polyline points="([^"]+)"', svg).group(1).split()
    xs, ys = zip(*[map(float, p.split(",")) for p in points])
    assert xs[0] < xs[1] < xs[2]
    assert ys[1] < ys[2] < ys[0]  # SVG y grows downwards: the highest value is nearest the top
    assert ys[2] == (ys[0] + ys[1]) / 2


def test_report_of_one_run(tmp_path):
    run = write_run(tmp_path / "run", [step_record(0, 0.2, {2: 0.5, 4: 0.75, 6: 0.25}, response=HOSTILE),
                                       step_record(10, 0.8, {2: 0.125, 4: 0.25, 6: 0.0})])
    page = render_report({str(run.root): evaluation_records(run.eval_dir)}, f"align-eval: {run.root}")
    assert_self_contained(page)
    # the hostile generation is shown, inert
    assert "<script>alert" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    # before / after: the headline keys, both values and the change
    row = re.search(r"<tr><td[^>]*>refusal_rate</td>(.*?)</tr>", page).group(1)
    assert re.findall(r"<td[^>]*>([^<]*)</td>", row) == ["0.2", "0.8", "+0.6"]
    # a suite's metric is shown even where no registered suite claims it as a headline key
    row = re.search(r"<tr><td[^>]*>masr</td>(.*?)</tr>", page).group(1)
    assert re.findall(r"<td[^>]*>([^<]*)</td>", row) == ["0.75", "0.25", "-0.5"]
    assert "<figcaption>masr</figcaption>" in page
    # a chart per headline metric against the step, and per-layer curves of the robustness suite, one per step
    assert "<figcaption>refusal_rate</figcaption>" in page
    assert "<figcaption>latent_robustness / per_layer / attack_success_rate</figcaption>" in page
    assert "step 0: layer 4, attack_success_rate 0.75" in page and "step 10: layer 6, attack_success_rate 0" in page
    # the judge's label counts per step, with the judge that gave them
    counts = re.search(r"<h3>refusal</h3><table>(.*?)</table>", page).group(1)
    assert "<td class=\"\">10</td><td class=\"\">2</td><td class=\"\">0</td><td class=\"\">8</td>" in counts
    assert "rules 2" in counts


def test_report_compares_two_runs(tmp_path):
    a = write_run(tmp_path / "run-a", [step_record(0, 0.2, {2: 0.5, 4: 0.75}), step_record(6, 0.6, {2: 0.25, 4: 0.5})])
    b = write_run(tmp_path / "run-b", [step_record(0, 0.2, {2: 0.5, 4: 0.75}), step_record(6, 0.9, {2: 0.0, 4: 0.125})])
    page = render_report({str(a.root): evaluation_records(a.eval_dir), str(b.root): evaluation_records(b.eval_dir)},
                         "comparison")
    assert_self_contained(page)
    header = re.search(r"<table><tr>(.*?)</tr>", page).group(1)
    assert "run-a before (step 0)" in header and "run-b after (step 6)" in header
    row = re.search(r"<tr><td[^>]*>refusal_rate</td>(.*?)</tr>", page).group(1)
    assert re.findall(r"<td[^>]*>([^<]*)</td>", row) == ["0.2", "0.6", "+0.4", "0.2", "0.9", "+0.7"]
    # one curve per run in the step plots (legend entries), per run and step in the per-layer plots
    refusal_chart = page[page.index('aria-label="refusal_rate against step"'):]
    refusal_chart = refusal_chart[: refusal_chart.index("</svg>")]
    assert refusal_chart.count("<polyline") == 2 and ">run-a</text>" in refusal_chart and ">run-b</text>" in refusal_chart
    assert "run-b step 6: layer 4, attack_success_rate 0.125" in page


def test_report_survives_odd_records_and_warns_of_mixed_judges(tmp_path):
    odd = step_record(3, 0.5, {1: 0.5, 2: 0.5})
    odd["suites"]["refusal"]["details"] = "not a mapping"
    odd["suites"]["refusal"]["samples"] = None
    other = step_record(6, 0.7, {1: 0.25, 2: 0.5})
    other["judges"] = {"refusal": {"name": "llm", "version": "xstest-1"}}
    page = render_report({"run": [step_record(0, 0.2, {1: 0.5, 2: 0.75}), odd, {"no": "step"}, "junk", other]}, "t")
    assert_self_contained(page)
    assert "refusal: labelled by different judges, not comparable" in page
    assert re.findall(r"<td[^>]*>([^<]*)</td>", re.search(r"<tr><td[^>]*>refusal_rate</td>(.*?)</tr>", page).group(1)) \
        == ["0.2", "0.7", "+0.5"]
