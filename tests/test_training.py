"""End-to-end tiny runs on CPU: every objective with every tuning strategy, what they leave
behind, what they change (and do not change), resume, and the effect of training."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from align_train.errors import ConfigError, DataError
from align_train.paths import DATA_DIR
from tests.conftest import FAST, run_recipe

BASE = load_file(str(DATA_DIR / "tiny-llama" / "model.safetensors"))
FREEZE_PATTERN = r"layers\.[23]\.mlp\."


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "final" / "model.safetensors"))


def weights_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("objective", ["sft", "dpo", "kto", "bco"])
@pytest.mark.parametrize("tuning", ["full", "lora", "freeze"])
def test_objective_with_tuning_strategy(tmp_path, objective, tuning):
    result = run_recipe(tmp_path, f"recipe=tiny/{objective}", f"tuning={tuning}", *FAST, "train.logging_steps=1")
    assert result.steps == 4
    assert result.train_loss is not None and torch.isfinite(torch.tensor(result.train_loss))
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3, 4]

    final = tmp_path / "final"
    assert AutoTokenizer.from_pretrained(final).chat_template
    assert not list(final.glob("*.bin")) + list(final.glob("*.pt")), "no pickles: safetensors only"
    if tuning == "lora":
        from peft import AutoPeftModelForCausalLM

        assert (final / "adapter_config.json").is_file()
        model = AutoPeftModelForCausalLM.from_pretrained(final)
        base = {k.replace("base_model.model.", ""): v for k, v in model.state_dict().items() if "lora_" not in k}
        changed_adapter = [k for k, v in model.state_dict().items() if "lora_B" in k and v.abs().sum() > 0]
        assert changed_adapter, "the adapter trained"
        for name, tensor in base.items():
            key = name.replace(".base_layer", "")
            key = "model.embed_tokens.weight" if key == "lm_head.weight" else key  # tied to the embeddings
            assert torch.equal(tensor, BASE[key]), f"frozen base weight {key} moved"
        return

    trained = final_weights(tmp_path)
    AutoModelForCausalLM.from_pretrained(final)  # loads as a standard checkpoint
    moved = {k for k in BASE if not torch.equal(trained[k], BASE[k])}
    if tuning == "full":
        assert len(moved) > len(BASE) // 2
    else:  # freeze: exactly the matching parameters moved, every other weight is bit-identical
        import re

        expected = {k for k in BASE if re.search(FREEZE_PATTERN, k)}
        assert moved == expected


def test_tiny_dpo_raises_heldout_preference_accuracy(tmp_path):
    result = run_recipe(tmp_path, "recipe=tiny/dpo")
    before, after = result.before, result.after
    assert after["preference_accuracy"] >= before["preference_accuracy"] + 0.2
    assert after["reward_accuracy"] >= 0.9
    assert after["logprob_margin"] > before["logprob_margin"]
    # Retained ability: the recipe's learning rate must not wreck the chosen answers (3x it does).
    assert after["perplexity"] < before["perplexity"] * 1.1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["after"] == pytest.approx(after)
    assert_readme_shows(result, tmp_path / "final")


def assert_readme_shows(result, final_dir) -> None:
    """This is the default run: the README's summary block and example answers are what it gives."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align_train.config import GenerationConfig
    from align_train.inference.generation import generate
    from align_train.paths import PROJECT_ROOT

    readme = (PROJECT_ROOT / "README.md").read_text()
    shown = dict(re.findall(r"^    (\w+) +(?:-|[\d.]+) +->  ([\d.]+)", readme, re.M))
    assert {"preference_accuracy", "reward_accuracy", "perplexity"} <= set(shown), shown
    for key, value in shown.items():
        assert result.after[key] == pytest.approx(float(value), rel=1e-3, abs=1e-3), key
    rows = re.findall(r"^\| (How do I [^|]*\?) \| ([^|]*?)\.\.\. \| ([^|]*?)\.\.\.", readme, re.M)
    assert len(rows) == 3, rows
    config = GenerationConfig(max_new_tokens=40)
    for column, model_dir in ((1, PROJECT_ROOT / "data" / "tiny-llama"), (2, final_dir)):
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        answers = generate(model, AutoTokenizer.from_pretrained(model_dir), [row[0] for row in rows], config)
        for row, answer in zip(rows, answers):
            assert answer.startswith(row[column]), (row[0], answer)


def test_tiny_kto_with_lora_learns_at_the_strategys_learning_rate(tmp_path):
    """The README's `recipe=tiny/kto tuning=lora`: at full tuning's rate (1e-4) the adapters barely move and held-out
    preference accuracy stayed where it started; LoRA's own default (1e-3) applies since the recipe sets none."""
    result = run_recipe(tmp_path, "recipe=tiny/kto", "tuning=lora", "train.max_steps=30", "data.max_eval_rows=48",
                        "train.save_steps=0")
    assert result.settings == {"learning_rate": {"value": 1e-3, "origin": "tuning=lora default"}}
    assert result.after["preference_accuracy"] >= result.before["preference_accuracy"] + 0.1
    assert result.after["logprob_margin"] > result.before["logprob_margin"]
    recorded = OmegaConf.load(tmp_path / "config.yaml")
    assert recorded.train.learning_rate == 1e-3  # config.yaml records the value the run used
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["settings"]["learning_rate"] == {"value": 1e-3, "origin": "tuning=lora default"}


def test_run_directory_records_config_provenance_and_metrics(tmp_path):
    run_recipe(tmp_path, "recipe=tiny/sft", *FAST, "objective.packing=true")
    config = OmegaConf.load(tmp_path / "config.yaml")
    assert config.objective.name == "sft" and config.objective.packing is True
    assert "${" not in (tmp_path / "config.yaml").read_text(), "the saved config is resolved"
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert "commit" in info["git"] and info["packages"]["trl"] and info["packages"]["torch"]
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert report["format"] == "messages" and report["train_rows"] > 0


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    steps = ["recipe=tiny/dpo", "train.max_steps=6", "train.save_steps=3", "eval=none"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run_recipe(straight, *steps)
    run_recipe(interrupted, *steps)
    # Interrupt after step 3: remove what the run wrote after its first checkpoint.
    shutil.rmtree(interrupted / "checkpoint-6")
    shutil.rmtree(interrupted / "final")
    with pytest.raises(ConfigError, match="resume=true"):
        run_recipe(interrupted, *steps)
    result = run_recipe(interrupted, *steps, "resume=true")
    assert result.resumed_from.endswith("checkpoint-3") and result.steps == 6
    expected, resumed = final_weights(straight), final_weights(interrupted)
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name


def test_resume_ignores_an_incomplete_checkpoint(tmp_path):
    steps = ["recipe=tiny/sft", "train.max_steps=4", "train.save_steps=2", "eval=none"]
    run_recipe(tmp_path, *steps)
    (tmp_path / "checkpoint-4" / "trainer_state.json").unlink()  # as if killed mid-save
    result = run_recipe(tmp_path, *steps, "resume=true")
    assert result.resumed_from.endswith("checkpoint-2")


def test_micro_batch_and_accumulation_do_not_change_the_trajectory(tmp_path):
    """Per-device batch 1 x accumulation 8 trains like per-device batch 8 (TRL's invariant test)."""
    common = ["recipe=tiny/dpo", "train.max_steps=3", "train.global_batch_size=8", "eval=none",
              "train.logging_steps=1"]
    run_recipe(tmp_path / "a", *common, "train.per_device_batch_size=8")
    run_recipe(tmp_path / "b", *common, "train.per_device_batch_size=1")

    def losses(d):
        return [r["loss"] for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "loss" in r]

    assert losses(tmp_path / "a") == pytest.approx(losses(tmp_path / "b"), rel=1e-4)
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name


def test_precomputed_reference_needs_no_reference_model(tmp_path, monkeypatch):
    import align_train.train as train_module

    def forbidden(model):
        raise AssertionError("a reference copy was made although log-probs are precomputed")

    monkeypatch.setattr(train_module, "frozen_copy", forbidden)
    result = run_recipe(tmp_path, "recipe=tiny/dpo", *FAST, "objective.precompute_ref_log_probs=true")
    assert result.steps == 4


def test_skipped_rows_are_counted_and_reported(tmp_path, capsys):
    rows = [json.loads(line) for line in (DATA_DIR / "tiny" / "sft.jsonl").read_text().splitlines()[:40]]
    rows[3]["messages"][-1]["content"] = "  "
    rows[7]["messages"] = []
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = ["recipe=tiny/sft", *FAST, f"data.train.tiny_sft.path={data}"]
    with pytest.raises(DataError, match=r"line 4.*\n.*line 8"):
        run_recipe(tmp_path / "strict", *overrides)
    result = run_recipe(tmp_path / "lenient", *overrides, "data.skip_invalid_rows=true")
    assert result.data["skipped_rows"] == 2
    assert "skipped 2 invalid row(s)" in capsys.readouterr().err
    report = json.loads((tmp_path / "lenient" / "data_report.json").read_text())
    assert report["skipped_rows"] == 2 and report["train_rows"] + report["eval_rows"] == 38


def test_incompatible_data_fails_before_the_model_loads(tmp_path):
    with pytest.raises(DataError, match="kto.*feedback.*messages"):
        run_recipe(tmp_path, "recipe=tiny/kto", "data=tiny_sft", "model.name_or_path=/nonexistent/model")


def test_wandb_offline_logs_under_the_run_directory(tmp_path):
    pytest.importorskip("wandb")
    run_recipe(tmp_path, "recipe=tiny/sft", *FAST, "logger=wandb")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))


def test_random_init_builds_the_architecture_from_its_config(tmp_path):
    result = run_recipe(tmp_path, "recipe=tiny/sft", "model=tiny-random", *FAST)
    assert result.before["perplexity"] > 1000  # untrained: about the vocabulary size
    assert result.after["perplexity"] < result.before["perplexity"]


def test_sft_on_documents_trains_every_token(tmp_path):
    result = run_recipe(tmp_path, "recipe=tiny/sft", "data=tiny_documents", *FAST, "train.max_steps=8")
    assert result.data["format"] == "documents"
    assert result.after["perplexity"] < result.before["perplexity"]


def test_dpo_on_standard_plain_string_pairs(tmp_path):
    pairs = DATA_DIR / "examples" / "preference.jsonl"
    result = run_recipe(
        tmp_path, "recipe=tiny/dpo", f"data.train.tiny_preference.path={pairs}", "data.eval_fraction=0",
        "train.max_steps=2", "train.global_batch_size=2", "train.per_device_batch_size=2", "eval=none",
    )
    assert result.steps == 2 and result.data["format"] == "preference"


def test_rows_the_trainer_drops_are_reported_and_an_emptied_set_is_an_error(tmp_path, capsys):
    """TRL removes rows whose prompt alone fills max_length; the run says so instead of training on fewer."""
    result = run_recipe(tmp_path / "some", "recipe=tiny/dpo", *FAST, "model.max_length=21")
    report = json.loads((tmp_path / "some" / "data_report.json").read_text())
    dropped = report["dropped_by_trainer"]["train"]
    assert 0 < dropped < result.data["train_rows"]
    assert f"{dropped} of {result.data['train_rows']} train rows were removed" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"every train row was removed.*model\.max_length=12"):
        run_recipe(tmp_path / "all", "recipe=tiny/dpo", *FAST, "model.max_length=12")
