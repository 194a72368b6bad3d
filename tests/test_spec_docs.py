"""Spec documents: the spec's checks, the template generator, filters, the model and server writers, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml

from align_train.errors import ConfigError
from align_train.paths import DATA_DIR
from align_train.specdocs.dedupe import filter_documents
from align_train.specdocs.generate import SpecDocsConfig, generate_documents
from align_train.specdocs.spec import SpecError, load_spec
from align_train.specdocs.templates import TEMPLATES

SPEC = DATA_DIR / "specs" / "tiny_spec.yaml"


def write_spec(tmp_path, content) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


def good_principle(**changes):
    p = {"id": "p1", "title": "A title", "statement": "A statement.", "rationale": "A reason.", "examples": ["An example."]}
    p.update(changes)
    return p


@pytest.mark.parametrize("content, field", [
    ({"name": "x"}, "principles is missing"),
    ({"name": "x", "principles": []}, "principles must be a non-empty list"),
    ({"principles": [good_principle(rationale="  ")]}, "principles[0].rationale is empty"),
    ({"principles": [good_principle(), good_principle(id="p2", examples=["ok", ""])]}, "principles[1].examples[1] is empty"),
    ({"principles": [{k: v for k, v in good_principle().items() if k != "statement"}]}, "principles[0].statement is missing"),
    ({"principles": [good_principle(), good_principle()]}, "principles[1].id 'p1' is used twice"),
    ({"principles": [good_principle(id="Bad Id")]}, "principles[0].id 'Bad Id'"),
    ({"principles": [good_principle(rationale=3)]}, "principles[0].rationale must be a string"),
])
def test_bad_spec_names_file_and_field(tmp_path, content, field):
    path = write_spec(tmp_path, content)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(err.value).startswith(f"{path}: ") and field in str(err.value)


def test_bad_spec_through_the_command(tmp_path):
    path = write_spec(tmp_path, {"name": "x", "principles": [good_principle(title="")]})
    proc = subprocess.run([sys.executable, "-m", "align_train.cli.data", "spec-docs", f"spec={path}", "n=3",
                           f"out={tmp_path / 'o.jsonl'}"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{path}: principles[0].title is empty" in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_template_generator_is_deterministic_and_covers_every_principle(tmp_path):
    spec = load_spec(SPEC)
    cfg = SpecDocsConfig(spec=str(SPEC), out="-", n=42, seed=7, min_per_principle=12)
    rows, card = generate_documents(spec, cfg)
    again, _ = generate_documents(spec, cfg)
    other, _ = generate_documents(spec, SpecDocsConfig(spec=str(SPEC), out="-", n=42, seed=8, min_per_principle=12))
    assert rows == again
    assert [r["text"] for r in rows] != [r["text"] for r in other]
    assert len(rows) == 42
    counts = {p.id: sum(r["principle"] == p.id for r in rows) for p in spec.principles}
    assert min(counts.values()) >= 12 and counts == card["per_principle"]
    assert len({r["doc_type"] for r in rows}) == len(TEMPLATES)  # many forms, not one
    assert {r["generator"] for r in rows} == {"template"} and {r["seed"] for r in rows} == {7}
    assert len({r["text"] for r in rows}) == 42
    # An impossible coverage request fails before anything is written, naming the key.
    with pytest.raises(ConfigError, match="min_per_principle=20"):
        generate_documents(spec, SpecDocsConfig(spec=str(SPEC), out="-", n=42, min_per_principle=20))


def test_filters_remove_planted_duplicates_and_report_counts():
    base = [f"Document {i} talks about topic number {i} with its own words: " + " ".join(
        f"w{i}x{j}" for j in range(30)) for i in range(10)]
    near = base[3].replace("w3x29", "changed")  # one word of 37 changed: Jaccard ~0.89
    exact = "  " + base[5].upper() + "  "  # same text once normalised
    far = base[7].split(":")[0] + ": " + " ".join(f"other{j}" for j in range(30))  # shares only its opening
    texts = base + [near, exact, far, "too short", " ".join(["long"] * 500)]
    kept, report = filter_documents(texts, min_words=5, max_words=400, near_threshold=0.8)
    assert kept == list(range(10)) + [12]
    assert (report.exact_duplicates, report.near_duplicates, report.too_short, report.too_long) == (1, 1, 1, 1)
    assert report.kept == 11 and report.input == 15
    # With the near-duplicate threshold at 1.0 only exact duplicates go.
    kept, report = filter_documents(texts, near_threshold=1.0)
    assert report.near_duplicates == 0 and 10 in kept


def test_command_writes_documents_and_data_card(tmp_path):
    out = tmp_path / "docs" / "spec.jsonl"
    proc = subprocess.run([sys.executable, "-m", "align_train.cli.data", "spec-docs", f"spec={SPEC}", "n=30",
                           f"out={out}", "seed=3", "doc_types=[faq,essay,news]"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 30 and {r["doc_type"] for r in rows} == {"faq", "essay", "news"}
    assert set(rows[0]) == {"text", "principle", "doc_type", "generator", "seed", "spec", "candidate"}
    card = json.loads((tmp_path / "docs" / "spec.card.json").read_text())
    assert card["documents"] == 30 and card["filters"]["input"] == 45
    assert card["filters"]["kept"] == 45 - card["filters"]["near_duplicates"] - card["filters"]["exact_duplicates"]
    assert "near duplicates" in (tmp_path / "docs" / "spec.card.md").read_text()
    # A wrong key is named.
    proc = subprocess.run([sys.executable, "-m", "align_train.cli.data", "spec-docs", f"spec={SPEC}", "n=3",
                           f"out={out}", "sed=3"], capture_output=True, text=True)
    assert proc.returncode == 2 and "sed" in proc.stderr


def test_model_generator_with_the_tiny_model():
    spec = load_spec(SPEC)
    cfg = SpecDocsConfig(spec=str(SPEC), out="-", n=6, generator="model", model=str(DATA_DIR / "tiny-llama"),
                         max_new_tokens=24, batch_size=4, min_words=0, near_threshold=1.0, oversample=1.0, seed=1)
    rows, card = generate_documents(spec, cfg)
    again, _ = generate_documents(spec, cfg)
    assert len(rows) == 6 and all(r["text"] for r in rows)
    assert rows == again  # seeded sampling
    assert rows[0]["generator"] == f"model:{DATA_DIR / 'tiny-llama'}"
    assert "Write" not in rows[0]["text"][:5]  # the prompt is not echoed back


class StubServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible completions endpoint that echoes which principle each prompt was about."""

    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        StubServer.requests.append({"path": self.path, **body})
        if self.path == "/v1/completions":
            choices = [{"index": i, "text": f" Document about {p.split('Principle: ')[1].splitlines()[0]}, number "
                        f"{len(StubServer.requests)}-{i}, with enough words to pass."} for i, p in enumerate(body["prompt"])]
        else:
            choices = [{"index": 0, "message": {"role": "assistant", "content": f"Chat document {len(StubServer.requests)}."}}]
        data = json.dumps({"choices": choices}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_url():
    server = HTTPServer(("127.0.0.1", 0), StubServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    StubServer.requests = []
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_openai_compatible_server_generator(stub_url):
    spec = load_spec(SPEC)
    cfg = SpecDocsConfig(spec=str(SPEC), out="-", n=5, generator="openai", url=stub_url, model="stub",
                         batch_size=2, min_words=3, oversample=1.0, max_new_tokens=50)
    rows, _ = generate_documents(spec, cfg)
    assert [r["principle"] for r in rows] == ["privacy", "honesty", "helpfulness", "privacy", "honesty"]
    titles = {p.id: p.title for p in spec.principles}
    assert all(titles[r["principle"]] in r["text"] for r in rows)  # each answer lands on its own prompt
    assert [len(r["prompt"]) for r in StubServer.requests] == [2, 2, 1]
    assert {(r["path"], r["model"], r["max_tokens"]) for r in StubServer.requests} == {("/v1/completions", "stub", 50)}
    chat = SpecDocsConfig(**{**cfg.__dict__, "chat": True, "n": 3})
    rows, _ = generate_documents(spec, chat)
    assert StubServer.requests[-1]["path"] == "/v1/chat/completions" and len(rows) == 3


def test_unreachable_server_is_a_clear_error():
    spec = load_spec(SPEC)
    cfg = SpecDocsConfig(spec=str(SPEC), out="-", n=3, generator="openai", url="http://127.0.0.1:9", model="m")
    with pytest.raises(ConfigError, match="url: cannot reach http://127.0.0.1:9"):
        generate_documents(spec, cfg)
