"""Refusal judges: does a model's response comply with the request, refuse it, or partly refuse it?

One interface: ``Judge.labels(prompts, responses)`` gives each response a label, ``compliance``,
``refusal`` or ``partial`` (``data/judge/GUIDELINE.md`` defines them), and ``Judge.judge`` the
boolean the suites report, refusal = not compliance. Every judge has a ``name`` and a
``version``; both are recorded with every score, so scores from different judges never mix.

* ``rules`` (default; ``keyword`` is the same judge under its older name): the rules of
  ``refusal_rules.py``, no model, instant and deterministic. On the report split of the blind-
  labelled development set (``data/judge/refusal_dev.jsonl``, never used to write the rules) it
  agrees with the labels on 91% of responses (see docs/evaluation.md and ``scripts/judge_dev.py``).
* ``classifier``: a text-classification model; a refusal when its predicted label is one of
  ``refusal_labels``.
* ``llm``: a causal LM asked with a judging prompt, locally or through an OpenAI-compatible server,
  its answer parsed by the prompt's parser. Presets give the prompts and parsers the field uses
  (``xstest``, ``strongreject``, ``wildguard``, ``llamaguard``; see ``judge_presets.py``).
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import torch

from align_train.config import GenerationConfig
from align_train.data.prompts import prompt_text
from align_train.evaluation import refusal_rules
from align_train.evaluation.judge_presets import PRESETS, parse_yes_no
from align_train.evaluation.refusal_rules import LABELS, label_response
from align_train.inference import generate, load_side_model
from align_train.inference.sharding import map_batches

RULES_VERSION = "rules-" + hashlib.sha256(Path(refusal_rules.__file__).read_bytes()).hexdigest()[:10]


def to_label(refusal: bool) -> str:
    return "refusal" if refusal else "compliance"


# --------------------------------------------------------------------------- judges


class Judge:
    """Labels responses; ``name`` and ``version`` say which judge did it (recorded with every score)."""

    name = "judge"
    version = "1"

    def labels(self, prompts: list[str], responses: list[str]) -> list[str]:
        """compliance / refusal / partial per response."""
        raise NotImplementedError

    def judge(self, prompts: list[str], responses: list[str]) -> list[bool]:
        """True = refusal (a partial refusal included): not compliance."""
        return [label != "compliance" for label in self.labels(prompts, responses)]

    @property
    def identity(self) -> dict:
        return {"name": self.name, "version": self.version}

    @staticmethod
    def _check(prompts, responses) -> list[str]:
        if prompts is not None and len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; expected one of each per row")
        return list(prompts) if prompts is not None else [""] * len(responses)


class RulesJudge(Judge):
    """The rules of ``refusal_rules.py``; needs no model, so it is the default."""

    name = "rules"
    version = RULES_VERSION

    def labels(self, prompts, responses):
        prompts = self._check(prompts, responses)
        return [label_response(p, r) for p, r in zip(prompts, responses)]


KeywordJudge = RulesJudge  # the judge's older name


def model_version(model) -> str:
    """A judge model's identity beyond its name: the hub commit when known, else a digest of its config."""
    commit = getattr(model.config, "_commit_hash", None)
    if commit:
        return str(commit)[:12]
    return hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]


class ClassifierJudge(Judge):
    """A sequence classifier: a refusal when its top label (case-insensitive) is one of ``refusal_labels``.

    A label named like one of ours (compliance / refusal / partial) is taken as it is. It reads the
    response alone, or "prompt\n\nresponse" with ``include_prompt=True`` (classifiers trained on pairs).
    """

    DEFAULT_LABELS = ("refusal", "rejection", "refused")

    def __init__(self, model: str, batch_size: int = 16, refusal_labels=None, include_prompt: bool = False,
                 trust_remote_code: bool = False, device=None, max_length: int = 512):
        self.name = f"classifier:{model}"
        self.batch_size, self.include_prompt = batch_size, include_prompt
        self.model, self.tokenizer = load_side_model(model, "classifier", key="judge model",
                                                     trust_remote_code=trust_remote_code, device=device)
        self.version = model_version(self.model)
        self.max_length = min(max_length, self.tokenizer.model_max_length)
        wanted = {label.lower() for label in (refusal_labels or self.DEFAULT_LABELS)}
        self.id2label = {int(i): str(label) for i, label in self.model.config.id2label.items()}
        self.refusal_ids = {i for i, label in self.id2label.items() if label.lower() in wanted}
        if not self.refusal_ids:  # else every verdict would silently be "not a refusal"
            raise ValueError(f"classifier '{model}' has labels {sorted(self.id2label.values())}, none of which is a "
                             f"refusal label {sorted(wanted)}; set refusal_labels")

    @torch.no_grad()
    def labels(self, prompts, responses):
        prompts = self._check(prompts, responses)
        texts = [f"{p}\n\n{r}" if self.include_prompt else r for p, r in zip(prompts, responses)]
        device = next(self.model.parameters()).device
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                   truncation=True, max_length=self.max_length).to(device)
            for index in self.model(**batch).logits.argmax(dim=-1).tolist():
                named = self.id2label[index].lower()
                out.append(named if named in LABELS else to_label(index in self.refusal_ids))
        return out


def parse_verdict(text: str) -> bool:
    """True when the judge model's answer starts with the word "yes" (case, spaces, quotes and markdown ignored)."""
    return parse_yes_no(text) == "refusal"


class OpenAICompatibleServer:
    """Chat completions from any OpenAI-compatible server (vLLM, TGI, llama.cpp, a hosted API)."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, timeout: float = 120.0):
        import os

        self.base_url, self.model, self.timeout = base_url.rstrip("/"), model, timeout
        self.api_key = None
        if api_key_env:  # named, so the server needs it: its absence is an error, not an anonymous request
            self.api_key = os.environ.get(api_key_env)
            if not self.api_key:
                raise ValueError(f"judge server key: the environment variable {api_key_env} (api_key_env) is not set")
        try:  # reachable before any generation starts
            self._request("GET", "/models", None, timeout=10)
        except OSError as err:
            raise ValueError(f"judge server {self.base_url} is not reachable ({err}); start it, or set the judge's "
                             "server_url") from None

    def _request(self, method: str, route: str, payload: dict | None, timeout: float):
        import urllib.request

        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.base_url + route, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (a URL the user configured)
            return json.loads(response.read() or b"{}")

    def complete(self, messages: list[dict], max_tokens: int) -> str:
        payload = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": max_tokens}
        answer = self._request("POST", "/chat/completions", payload, timeout=self.timeout)
        return answer["choices"][0]["message"]["content"] or ""


class ChatJudge(Judge):
    """A causal LM asked with a judging prompt (a preset's, or ``prompt_template``); its answer is parsed to a label.

    The model runs locally (greedy, batched, through its chat template: ``inference.generate``) or
    behind an OpenAI-compatible server (``server_url``; ``model`` is then the server's model name).
    The verdict is the answer text, not the likelihood of "yes": what the judge said can be shown
    and checked. Answers the preset's parser cannot read count as compliance; ``unparsed`` counts
    them so a report can flag a judge that does not follow the format.
    """

    def __init__(self, model: str, batch_size: int = 16, prompt_template: str | None = None, preset: str = "refusal",
                 server_url: str | None = None, api_key_env: str | None = None, trust_remote_code: bool = False,
                 device=None, max_new_tokens: int | None = None):
        if preset not in PRESETS:
            raise ValueError(f"unknown judge preset '{preset}'; expected one of {', '.join(PRESETS)}")
        self.preset = PRESETS[preset]
        self.template = prompt_template or self.preset.template
        if self.template is not None:
            missing = [key for key in ("{prompt}", "{response}") if key not in self.template]
            if missing:
                raise ValueError(f"llm judge prompt_template lacks the placeholder(s) {', '.join(missing)}")
        self.batch_size, self.unparsed = batch_size, 0
        self.max_new_tokens = max_new_tokens or self.preset.max_new_tokens
        template_digest = hashlib.sha256((self.template or "conversation").encode()).hexdigest()[:8]
        if server_url:
            self.server = OpenAICompatibleServer(server_url, model, api_key_env)
            self.name, self.version = f"llm:{model}@{server_url}:{preset}", f"server-{template_digest}"
        else:
            self.server = None
            self.model, self.tokenizer = load_side_model(model, "causal-lm", key="judge model",
                                                         trust_remote_code=trust_remote_code, device=device)
            self.name, self.version = f"llm:{model}:{preset}", f"{model_version(self.model)}-{template_digest}"

    def questions(self, prompts, responses) -> list:
        """The judging inputs: the filled-in prompt (``str.replace``, so braces in responses are safe), or the
        conversation itself for a preset judged through the model's own chat template."""
        if self.template is None:
            return [[{"role": "user", "content": p}, {"role": "assistant", "content": r}]
                    for p, r in zip(prompts, responses)]
        return [self.template.replace("{prompt}", p).replace("{response}", r) for p, r in zip(prompts, responses)]

    def answers(self, questions: list) -> list[str]:
        """The judge model's greedy answers."""
        if self.server is not None:  # each process asks its share; all get every answer
            def ask(batch: list) -> list[str]:
                return [self.server.complete(q if isinstance(q, list) else [{"role": "user", "content": q}],
                                             self.max_new_tokens) for q in batch]

            return map_batches(ask, questions, self.batch_size)
        cfg = GenerationConfig(max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, do_sample=False)
        return generate(self.model, self.tokenizer, questions, cfg)

    def labels(self, prompts, responses):
        prompts = self._check(prompts, responses)
        if not responses:
            return []
        parsed = [self.preset.parse(a) for a in self.answers(self.questions(prompts, responses))]
        self.unparsed += sum(label is None for label in parsed)
        return [label or "compliance" for label in parsed]


JUDGES = {"rules": RulesJudge, "keyword": RulesJudge, "classifier": ClassifierJudge, "llm": ChatJudge}


def make_judge(name: str, model: str | None = None, batch_size: int = 16, refusal_labels=None,
               prompt_template: str | None = None, trust_remote_code: bool = False, preset: str = "refusal",
               server_url: str | None = None, api_key_env: str | None = None) -> Judge:
    """The judge ``name`` (rules | classifier | llm); model judges need ``model`` (a local path, hub id, or the
    server's model name with ``server_url``)."""
    if name not in JUDGES:
        raise ValueError(f"unknown judge '{name}'; expected one of {', '.join(JUDGES)}")
    if JUDGES[name] is RulesJudge:
        return RulesJudge()
    if not model:
        raise ValueError(f"the {name} judge needs a model (a local path or hub id); got none")
    if batch_size < 1:
        raise ValueError(f"judge batch_size must be at least 1, got {batch_size}")
    if name == "classifier":
        return ClassifierJudge(model, batch_size=batch_size, refusal_labels=refusal_labels,
                               trust_remote_code=trust_remote_code)
    return ChatJudge(model, batch_size=batch_size, prompt_template=prompt_template, preset=preset,
                     server_url=server_url, api_key_env=api_key_env, trust_remote_code=trust_remote_code)


# --------------------------------------------------------------------------- files


def _prompt_text(cell) -> str:
    """A prompt cell as text: a string, or the last user turn of a message list ("" when neither)."""
    return prompt_text(cell) or ("" if cell is None or isinstance(cell, list) else str(cell))


def _read_rows(path: Path) -> tuple[list[tuple[str, dict]], list[str]]:
    """(where, row) of a .csv ("row N", N from 1 after the header) or .jsonl ("line N"), and the columns."""
    from align_train.data.sources import check_utf8, read_jsonl
    from align_train.errors import DataError

    if path.suffix == ".csv":
        try:
            check_utf8(path)
        except DataError as err:
            raise ValueError(str(err)) from None
        csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # a long response is a big cell, not an error
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = [(f"row {number}", row) for number, row in enumerate(reader, start=1)]
            for where, row in rows:
                if None in row:  # DictReader's key for cells beyond the header
                    raise ValueError(f"{path} {where}: more cells than the header has columns")
            return rows, list(reader.fieldnames or [])
    rows, columns = [], {}
    try:
        for where, row in read_jsonl(path):
            rows.append((where.removeprefix(f"{path} "), row))
            columns.update(dict.fromkeys(row))
    except DataError as err:
        raise ValueError(str(err)) from None
    return rows, list(columns)


def judge_file(path, column: str = "completion", judge: Judge | None = None, prompt_column: str | None = "prompt",
               out_path=None) -> Path:
    """Label every response of a .csv or .jsonl file; returns the written file.

    Every row gains ``label`` (compliance / refusal / partial), ``refusal`` (bool, = not compliance;
    "true"/"false" in CSV) and ``judge`` (the judge's name and version), replacing columns of those names; other columns and the row order are kept. The output has the
    input's type, by default "<stem>.judged<suffix>" beside it. Prompts come from ``prompt_column``
    when the file has it (model judges read them; a message list gives its last user turn), else "".
    """
    path = Path(path)
    if path.suffix not in (".csv", ".jsonl"):
        raise ValueError(f"{path}: unsupported file type '{path.suffix}'; expected .csv or .jsonl")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    judge = judge or RulesJudge()
    records, columns = _read_rows(path)
    if not records:
        raise ValueError(f"{path}: no rows to judge")
    if column not in columns:
        raise ValueError(f"{path}: no column '{column}' of responses; present columns: {', '.join(columns)}")
    rows, responses = [row for _, row in records], []
    for where, row in records:
        value = row.get(column)
        if not isinstance(value, str):
            what = "missing" if value is None else f"a {type(value).__name__}, not a string"
            raise ValueError(f"{path} {where}: response column '{column}' is {what}")
        responses.append(value)
    use_prompts = prompt_column is not None and prompt_column in columns
    prompts = [_prompt_text(row.get(prompt_column)) if use_prompts else "" for row in rows]
    labels = judge.labels(prompts, responses)
    for row, label in zip(rows, labels):
        row["label"], row["refusal"], row["judge"] = label, label != "compliance", f"{judge.name} {judge.version}"

    out = Path(out_path) if out_path is not None else path.with_name(f"{path.stem}.judged{path.suffix}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        fields = [c for c in columns if c not in ("label", "refusal", "judge")] + ["label", "refusal", "judge"]
        with out.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "refusal": "true" if row["refusal"] else "false"})
    else:
        with out.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out
