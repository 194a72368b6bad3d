"""``align-data spec-docs key=value ...``: write synthetic spec documents and their data card.

    align-data spec-docs spec=data/specs/tiny_spec.yaml n=200 out=docs/spec_docs.jsonl
    align-data spec-docs spec=my_spec.yaml n=5000 out=docs.jsonl generator=model model=Qwen/Qwen2.5-7B-Instruct chat=true
    align-data spec-docs spec=my_spec.yaml n=5000 out=docs.jsonl generator=openai url=http://localhost:8000 model=my-model

Arguments are OmegaConf dot-list overrides of ``SpecDocsConfig``, so a wrong key or type is an
error that names the key, in the same syntax as ``align-train``'s overrides.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from align_train.errors import ConfigError
from align_train.specdocs.generate import SpecDocsConfig, generate_documents, render_card
from align_train.specdocs.spec import load_spec


def parse_args(argv: list[str]) -> SpecDocsConfig:
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise ConfigError(f"arguments are key=value; got {bad} (keys: {', '.join(SpecDocsConfig.__dataclass_fields__)})")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(SpecDocsConfig), OmegaConf.from_dotlist(argv))
        for key in ("spec", "out"):
            if OmegaConf.is_missing(merged, key):
                raise ConfigError(f"{key}=... is required")
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(str(err).splitlines()[0] + f" (key: {getattr(err, 'full_key', '?')})") from err


def card_paths(out: Path) -> tuple[Path, Path]:
    stem = out.with_suffix("")
    return stem.with_name(stem.name + ".card.md"), stem.with_name(stem.name + ".card.json")


def spec_docs(argv: list[str]) -> dict:
    """Run the generator; returns the data card (also written beside the output)."""
    cfg = parse_args(argv)
    spec = load_spec(cfg.spec)
    rows, card = generate_documents(spec, cfg)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    md, js = card_paths(out)
    md.write_text(render_card(card), encoding="utf-8")
    js.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    fl = card["filters"]
    print(f"[align-data] {len(rows)} documents -> {out} (candidates {fl['input']}: removed {fl['too_short']} short, "
          f"{fl['too_long']} long, {fl['exact_duplicates']} exact and {fl['near_duplicates']} near duplicates); "
          f"data card {md}", file=sys.stderr)
    return card
