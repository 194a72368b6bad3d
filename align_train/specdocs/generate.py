"""Synthetic spec documents: plan (principle x document type), write, filter, select, describe.

Three writers share one plan and one filter: ``template`` (offline, deterministic given the
seed), ``model`` (any local or hub causal LM through transformers' batched generation) and
``openai`` (an OpenAI-compatible server such as vLLM, over plain HTTP). More candidates than
asked for are written (``oversample``) so that duplicates and length failures can be dropped
while every principle keeps at least ``min_per_principle`` documents.
"""

from __future__ import annotations

import json
import math
import os
import random
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import List, Optional

from align_train.errors import ConfigError
from align_train.specdocs.dedupe import filter_documents
from align_train.specdocs.spec import Principle, Spec
from align_train.specdocs.templates import TEMPLATES, model_prompt

GENERATORS = ("template", "model", "openai")


@dataclass
class SpecDocsConfig:
    """Settings of ``align-data spec-docs`` (key=value on the command line)."""

    spec: str = "???"  # the spec YAML file
    n: int = 100  # documents to write
    out: str = "???"  # output .jsonl; the data card goes beside it (<out>.card.md / .card.json)
    generator: str = "template"  # template | model | openai
    seed: int = 0
    doc_types: List[str] = field(default_factory=lambda: list(TEMPLATES))
    min_per_principle: int = 1  # every principle at least this many times in the output, or an error
    oversample: float = 1.5  # candidates written = ceil(n x oversample), before filtering
    # Filters: words per document, and near-duplicate Jaccard threshold on word 3-shingles (1.0: exact only).
    min_words: int = 20
    max_words: Optional[int] = 2000
    near_threshold: float = 0.8
    # model: a local directory or hub id; openai: the model name the server expects.
    model: Optional[str] = None
    url: Optional[str] = None  # openai: base URL of the server, e.g. http://localhost:8000
    api_key_env: str = "OPENAI_API_KEY"  # openai: environment variable holding the key (optional)
    chat: bool = False  # model/openai: send the prompt as a chat message (chat template / chat endpoint)
    max_new_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    batch_size: int = 8
    timeout: float = 120.0  # openai: seconds per request


@dataclass
class Planned:
    index: int
    principle: Principle
    doc_type: str


def plan(spec: Spec, count: int, doc_types: list[str], seed: int) -> list[Planned]:
    """Principles in turn (so each gets count // P or one more), document types cycled per principle."""
    rng = random.Random(seed)
    cycles = {p.id: rng.sample(doc_types, len(doc_types)) for p in spec.principles}
    out = []
    for k in range(count):
        p = spec.principles[k % len(spec.principles)]
        turn = k // len(spec.principles)
        out.append(Planned(k, p, cycles[p.id][turn % len(doc_types)]))
    return out


# ----------------------------------------------------------------------------- writers


def write_template(items: list[Planned], cfg: SpecDocsConfig, spec: Spec) -> list[str]:
    # One random stream per document, derived from (seed, index): a document never depends on the others.
    return [TEMPLATES[it.doc_type](it.principle, random.Random(f"{cfg.seed}:{it.index}")) for it in items]


def write_model(items: list[Planned], cfg: SpecDocsConfig, spec: Spec) -> list[str]:
    """Batched sampling from a causal LM (the shared generator; one seed for the whole run)."""
    import torch

    from align_train.config import GenerationConfig
    from align_train.inference import generate, load_side_model

    model, tokenizer = load_side_model(cfg.model, "causal-lm", key="model")
    prompts = [model_prompt(it.principle, it.doc_type, spec.name) for it in items]
    sampling = GenerationConfig(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                do_sample=cfg.temperature > 0, temperature=cfg.temperature or 1.0, top_p=cfg.top_p)
    torch.manual_seed(cfg.seed)
    return generate(model, tokenizer, prompts, sampling, chat=cfg.chat)


def _post(url: str, payload: dict, cfg: SpecDocsConfig) -> dict:
    headers = {"Content-Type": "application/json"}
    if os.environ.get(cfg.api_key_env):
        headers["Authorization"] = f"Bearer {os.environ[cfg.api_key_env]}"
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=cfg.timeout) as response:
            return json.loads(response.read().decode())
    except urllib.error.HTTPError as err:
        raise ConfigError(f"url: {url} answered HTTP {err.code}: {err.read()[:300]!r}") from err
    except urllib.error.URLError as err:
        raise ConfigError(f"url: cannot reach {url}: {err.reason}") from err


def write_openai(items: list[Planned], cfg: SpecDocsConfig, spec: Spec) -> list[str]:
    """``POST /v1/completions`` (prompts batched) or ``/v1/chat/completions`` (one per request)."""
    base = cfg.url.rstrip("/").removesuffix("/v1")
    prompts = [model_prompt(it.principle, it.doc_type, spec.name) for it in items]
    common = {"model": cfg.model, "max_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
              "top_p": cfg.top_p}
    texts: list[str] = []
    if cfg.chat:
        for k, prompt in enumerate(prompts):
            reply = _post(f"{base}/v1/chat/completions",
                          {**common, "seed": cfg.seed + k, "messages": [{"role": "user", "content": prompt}]}, cfg)
            texts.append(reply["choices"][0]["message"]["content"].strip())
        return texts
    for start in range(0, len(prompts), cfg.batch_size):
        batch = prompts[start:start + cfg.batch_size]
        reply = _post(f"{base}/v1/completions", {**common, "seed": cfg.seed + start, "prompt": batch}, cfg)
        choices = sorted(reply["choices"], key=lambda c: c.get("index", 0))
        if len(choices) != len(batch):
            raise ConfigError(f"url: {base}/v1/completions returned {len(choices)} choices for {len(batch)} prompts")
        texts += [c["text"].strip() for c in choices]
    return texts


WRITERS = {"template": write_template, "model": write_model, "openai": write_openai}


# ----------------------------------------------------------------------------- the whole step


def check_config(cfg: SpecDocsConfig, spec: Spec) -> None:
    """Everything that can be checked before writing a document; errors name the key."""
    if cfg.generator not in GENERATORS:
        raise ConfigError(f"generator is '{cfg.generator}'; expected one of {', '.join(GENERATORS)}")
    unknown = [t for t in cfg.doc_types if t not in TEMPLATES]
    if unknown or not cfg.doc_types:
        raise ConfigError(f"doc_types: unknown {unknown or 'empty list'}; expected some of {', '.join(TEMPLATES)}")
    if cfg.n < 1:
        raise ConfigError(f"n must be >= 1, got {cfg.n}")
    needed = cfg.min_per_principle * len(spec.principles)
    if cfg.n < needed:
        raise ConfigError(f"n={cfg.n} cannot give each of the {len(spec.principles)} principles "
                          f"min_per_principle={cfg.min_per_principle} documents (needs n >= {needed})")
    if cfg.oversample < 1:
        raise ConfigError(f"oversample must be >= 1, got {cfg.oversample}")
    if cfg.generator == "model" and not cfg.model:
        raise ConfigError("generator=model needs model=<local directory or hub id>")
    if cfg.generator == "openai" and not (cfg.url and cfg.model):
        raise ConfigError("generator=openai needs url=<server base URL> and model=<model name>")


def _select(items: list[Planned], n: int) -> list[Planned]:
    """n documents, principles in turn (keeps coverage balanced after filtering)."""
    queues: dict[str, list[Planned]] = {}
    for it in items:
        queues.setdefault(it.principle.id, []).append(it)
    chosen: list[Planned] = []
    while len(chosen) < n and any(queues.values()):
        for queue in queues.values():
            if queue and len(chosen) < n:
                chosen.append(queue.pop(0))
    return sorted(chosen, key=lambda it: it.index)


def generate_documents(spec: Spec, cfg: SpecDocsConfig) -> tuple[list[dict], dict]:
    """The rows (text + provenance) and the data card's content."""
    check_config(cfg, spec)
    candidates = plan(spec, math.ceil(cfg.n * cfg.oversample), list(cfg.doc_types), cfg.seed)
    texts = WRITERS[cfg.generator](candidates, cfg, spec)
    kept, report = filter_documents(texts, cfg.min_words, cfg.max_words, cfg.near_threshold)
    chosen = _select([candidates[i] for i in kept], cfg.n)
    per_principle = Counter(it.principle.id for it in chosen)
    short = {p.id: per_principle.get(p.id, 0) for p in spec.principles
             if per_principle.get(p.id, 0) < cfg.min_per_principle}
    if short:
        raise ConfigError(
            f"after filtering, principle(s) {short} have fewer than min_per_principle={cfg.min_per_principle} "
            f"documents (filters removed {report.too_short} short, {report.too_long} long, "
            f"{report.exact_duplicates} exact and {report.near_duplicates} near duplicates); raise oversample, "
            "add examples to the spec, or relax min_words / near_threshold")
    generator = cfg.generator if cfg.generator == "template" else f"{cfg.generator}:{cfg.model}"
    rows = [{"text": texts[it.index], "principle": it.principle.id, "doc_type": it.doc_type,
             "generator": generator, "seed": cfg.seed, "spec": spec.name, "candidate": it.index} for it in chosen]
    words = sorted(len(r["text"].split()) for r in rows)
    card = {
        "spec": {"name": spec.name, "path": spec.path, "principles": [p.id for p in spec.principles]},
        "settings": asdict(cfg),
        "documents": len(rows),
        "requested": cfg.n,
        "candidates": len(candidates),
        "filters": asdict(report),
        "unused_after_filtering": report.kept - len(rows),
        "per_principle": {p.id: per_principle.get(p.id, 0) for p in spec.principles},
        "per_doc_type": dict(sorted(Counter(r["doc_type"] for r in rows).items())),
        "words": {"min": words[0], "median": words[len(words) // 2], "max": words[-1], "total": sum(words)}
        if words else {},
    }
    return rows, card


def render_card(card: dict) -> str:
    """The markdown data card: what the documents are, how they were made, what was filtered out."""
    f = card["filters"]
    lines = [
        f"# Spec documents: {card['spec']['name']}",
        "",
        f"{card['documents']} synthetic documents (of {card['requested']} requested) about the model spec "
        f"`{card['spec']['path']}`, written by the `{card['settings']['generator']}` generator with seed "
        f"{card['settings']['seed']}, for model-spec midtraining (`objective=midtrain`). Each row has `text` and its "
        "provenance: `principle`, `doc_type`, `generator`, `seed`, `spec`, `candidate` (index in the plan).",
        "",
        "## Filtering",
        "",
        "| step | documents |", "| --- | --- |",
        f"| candidates written | {f['input']} |",
        f"| removed: shorter than {f['settings']['min_words']} words | {f['too_short']} |",
        f"| removed: longer than {f['settings']['max_words']} words | {f['too_long']} |",
        f"| removed: exact duplicates (normalised text) | {f['exact_duplicates']} |",
        f"| removed: near duplicates (Jaccard >= {f['settings']['near_threshold']} on word "
        f"{f['settings']['shingle_size']}-shingles) | {f['near_duplicates']} |",
        f"| kept by the filters | {f['kept']} |",
        f"| written (principles in turn) | {card['documents']} |",
        "",
        "## Coverage",
        "",
        "| principle | documents |", "| --- | --- |",
        *[f"| `{k}` | {v} |" for k, v in card["per_principle"].items()],
        "",
        "| document type | documents |", "| --- | --- |",
        *[f"| `{k}` | {v} |" for k, v in card["per_doc_type"].items()],
        "",
        f"Words per document: {card['words'].get('min')} min, {card['words'].get('median')} median, "
        f"{card['words'].get('max')} max; {card['words'].get('total')} in all.",
        "",
        "Synthetic text: it says what the spec says, in many forms; it is not evidence about the world.",
        "",
    ]
    return "\n".join(lines)
