"""final/README.md is a real model card, written from the run directory: metadata the hub reads (base model as its
hub id, datasets, licence passed through, library, tags, model-index), the recipe and exact command, the objective and
tuning with their settings, trainable parameters, and the evaluation's before / after."""

from __future__ import annotations

import json
import re

import yaml
from omegaconf import OmegaConf

from align_train.model_card import card_metadata, card_text, command_of, hub_id_of, recipe_of, write_card
from align_train.run_dir import RunDir
from tests.conftest import compose_config


def metadata(text: str) -> dict:
    return yaml.safe_load(re.match(r"^---\n(.*?)\n---\n", text, re.S).group(1))


def fake_run(tmp_path, *overrides, adapter=False, base_card: str | None = None, before=None, after=None):
    """A finished run's directory as the run writes it, without training (the card reads only these files)."""
    base = tmp_path / "hub" / "models--org--tiny-chat" / "snapshots" / "0123abcd"
    base.mkdir(parents=True)
    if base_card is not None:
        (base / "README.md").write_text(base_card)
    run = RunDir(tmp_path / "run")
    cfg = compose_config(f"model.name_or_path={base}", *overrides, output_dir=run.root)
    run.root.mkdir()
    OmegaConf.save(cfg, run.config)
    argv = ["/venv/bin/align-train", "recipe=tiny/dpo", f"model.name_or_path={base}", *overrides]
    run.run_info.write_text(json.dumps({"argv": argv, "overrides": argv[1:], "packages": {"trl": "1.16.0"}}))
    run.summary.write_text(json.dumps({"steps": 4, "train_loss": 0.41, "parameters": {"total": 1000, "trainable": 25},
                                       "recipe": "tiny-dpo", "objective": "dpo", "tuning": "lora"}))
    run.data_report.write_text(json.dumps({"sources": {"tiny_preference": {"format": "preference", "train_rows": 540}},
                                           "format": "preference", "train_rows": 540, "eval_rows": 60}))
    run.eval_dir.mkdir()
    for step, scores in ((0, before), (4, after)):
        if scores:
            (run.eval_dir / f"step-{step}.json").write_text(json.dumps({"step": step, **scores, "errors": {}}))
    run.final.mkdir()
    if adapter:
        (run.final / "adapter_config.json").write_text("{}")
    return run, base


def test_card_metadata_for_an_adapter_on_a_hub_model(tmp_path):
    run, _ = fake_run(tmp_path, "tuning=lora", "tuning.r=8", "eval=safety", "data.train.tiny_preference.path=org/prefs",
                      "hub.tags=[safety]", adapter=True,
                      base_card="---\nlicense: apache-2.0\ntags: [chat]\n---\n# tiny chat\n",
                      before={"refusal_rate": 0.2, "over_refusal_rate": 0.1, "preference_accuracy": 0.55},
                      after={"refusal_rate": 0.9, "over_refusal_rate": 0.12, "preference_accuracy": 0.8})
    text = card_text(run)
    meta = metadata(text)
    assert meta["base_model"] == "org/tiny-chat", "a hub-cache snapshot is named by its hub id"
    assert meta["license"] == "apache-2.0", "the base model's licence passes through"
    assert meta["library_name"] == "peft" and meta["datasets"] == ["org/prefs"]
    assert {"align-train", "dpo", "lora", "peft", "safety"} <= set(meta["tags"])
    (model,) = meta["model-index"]
    metrics = {(r["dataset"]["name"], m["name"]): m["value"] for r in model["results"] for m in r["metrics"]}
    assert metrics[("AdvBench harmful behaviors", "refusal_rate (after training)")] == 0.9
    assert metrics[("AdvBench harmful behaviors", "refusal_rate (before training)")] == 0.2
    assert metrics[("XSTest v2 prompts", "over_refusal_rate (after training)")] == 0.12
    assert all(r["task"]["type"] == "text-generation" for r in model["results"])
    body = text.split("\n---\n", 1)[1]
    assert "[org/tiny-chat](https://huggingface.co/org/tiny-chat)" in body and "LoRA adapter" in body
    assert "`r=8`" in body and "`target_modules=" in body, "the tuning strategy's settings"
    assert "`beta=0.1`" in body, "the objective's settings"
    assert "Trainable parameters: 25 of 1,000 (2.50%)" in body
    assert "| refusal_rate | refusal | 0.2000 | 0.9000 |" in body
    assert "align-train recipe=tiny/dpo" in body and "tuning.r=8" in body, "the exact command"
    assert "Recipe: `tiny/dpo`" in body


def test_hub_license_overrides_and_a_local_base_model_has_no_hub_id(tmp_path):
    run, base = fake_run(tmp_path, "hub.license=mit", base_card="---\nlicense: llama3.1\n---\n")
    meta = metadata(card_text(run))
    assert meta["license"] == "mit" and meta["library_name"] == "transformers"
    assert meta["base_model"] == "org/tiny-chat"
    assert hub_id_of(str(tmp_path / "plain-dir")) is None and hub_id_of("./model") is None
    assert hub_id_of("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"


def test_a_later_stage_names_the_first_base_model(tmp_path):
    """A pipeline stage starts from the stage before's final/: its card's base_model passes through."""
    first = tmp_path / "stage1-final"
    first.mkdir()
    (first / "README.md").write_text("---\nbase_model: org/tiny-chat\nlicense: apache-2.0\ntags: [align-train]\n---\n")
    run, _ = fake_run(tmp_path, f"model.name_or_path={first}")
    meta = metadata(card_text(run))
    assert meta["base_model"] == "org/tiny-chat" and meta["license"] == "apache-2.0"


def test_without_evaluation_the_card_says_how_to_score(tmp_path):
    run, _ = fake_run(tmp_path, "eval=none")
    text = card_text(run)
    assert "model-index" not in metadata(text) and "align-eval RUN_DIR" in text


def test_write_card_replaces_the_trainers_generic_card(tmp_path):
    run, _ = fake_run(tmp_path, before={"perplexity": 2.0}, after={"perplexity": 1.5})
    run.file("README.md").write_text("This model is a fine-tuned version of [None](https://huggingface.co/None).")
    path = write_card(run)
    assert path == run.final / "README.md" and run.file("README.md").read_text() == path.read_text()
    assert card_metadata(path)["model-index"][0]["results"][0]["metrics"][0]["value"] == 1.5


def test_command_and_recipe_from_run_info():
    assert command_of({"argv": ["/x/align_train/__main__.py", "recipe=tiny/kto", "run_name=a b"]}) == \
        "python -m align_train recipe=tiny/kto 'run_name=a b'"
    assert recipe_of({"overrides": ["recipe=tiny/kto"]}) == "tiny/kto"
    assert recipe_of({"overrides": []}) == "tiny/dpo", "the default recipe of conf/config.yaml"
