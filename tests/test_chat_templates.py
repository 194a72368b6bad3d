"""Chat templates: model.chat_template's presets render as the published templates and mark the assistant turns;
a base model without a template trains on conversations once one is set; a template whose assistant turns end
with a token the model does not stop on is named before training."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from transformers import AutoTokenizer

from align_train.errors import ConfigError, DataError
from align_train.models import chat_template_presets, load_tokenizer, read_chat_template, template_stop_problem
from align_train.paths import DATA_DIR
from tests.conftest import FAST, compose_config, run_recipe

# Published templates that TRL does not ship, as their model repositories publish them.
# ChatML (e.g. teknium/OpenHermes-2.5-Mistral-7B's tokenizer_config.json).
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' "
          "+ '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# HuggingFaceH4/zephyr-7b-beta's tokenizer_config.json.
ZEPHYR = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
          "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
          "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
          "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")


def trl_template(name: str) -> str:
    import trl

    from pathlib import Path

    return (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text()


def family_tokenizer(family: str):
    return AutoTokenizer.from_pretrained(DATA_DIR / "tiny-random" / family)


# preset -> (the published template, a tokenizer with the family's bos / eos, whether it takes a system turn)
PUBLISHED = {
    "chatml": (lambda: CHATML, "qwen2", True),
    "llama3": (lambda: trl_template("llama3"), "llama", True),
    "gemma": (lambda: trl_template("gemma3"), "gemma3_text", True),
    "mistral": (lambda: (DATA_DIR / "tiny-random" / "mistral" / "chat_template.jinja").read_text(), "mistral", True),
    "zephyr": (lambda: ZEPHYR, "mistral", True),
    "phi3": (lambda: trl_template("phi3"), "phi3", True),
}
USER, ANSWER = {"role": "user", "content": "How do I bake bread?"}, {"role": "assistant", "content": "Knead, rest, bake."}
CONVERSATIONS = [
    [USER, ANSWER],
    [USER, ANSWER, {"role": "user", "content": "And rye?"}, {"role": "assistant", "content": "Use a starter."}],
    [{"role": "system", "content": "Be brief."}, USER, ANSWER],
    [USER],
]


def test_the_required_presets_ship():
    assert {"chatml", "llama3", "gemma", "mistral", "zephyr"} <= set(chat_template_presets())
    assert set(chat_template_presets()) == set(PUBLISHED)


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_a_preset_renders_what_the_published_template_renders(preset, generation_prompt):
    published, family, _ = PUBLISHED[preset]
    tokenizer = family_tokenizer(family)
    ours = read_chat_template(preset)
    for messages in CONVERSATIONS:
        if messages[-1]["role"] == "user" and not generation_prompt:
            continue
        expected = tokenizer.apply_chat_template(messages, chat_template=published(), tokenize=False,
                                                 add_generation_prompt=generation_prompt)
        got = tokenizer.apply_chat_template(messages, chat_template=ours, tokenize=False,
                                            add_generation_prompt=generation_prompt)
        assert got == expected, (preset, messages)


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_a_preset_marks_exactly_the_assistant_turns_and_their_end(preset):
    from trl.chat_template_utils import is_chat_template_stop_token_trained

    tokenizer = family_tokenizer(PUBLISHED[preset][1])
    template = read_chat_template(preset)
    messages = CONVERSATIONS[1]
    out = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    marked = tokenizer.decode([t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m])
    assert "Knead, rest, bake." in marked and "Use a starter." in marked
    assert "bake bread" not in marked and "rye" not in marked  # the user's turns are never trained on
    assert is_chat_template_stop_token_trained(tokenizer, chat_template=template)


def test_a_template_file_or_a_preset_is_read_and_a_bad_one_is_named(tmp_path):
    good = tmp_path / "mine.jinja"
    good.write_text(CHATML)
    assert read_chat_template(str(good)) == CHATML
    with pytest.raises(ConfigError, match="neither a preset .*chatml.*nor a Jinja file"):
        read_chat_template("no-such-template")
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}{{ m['content'] }")
    with pytest.raises(ConfigError, match=r"model.chat_template: .*broken.jinja.* not a valid Jinja template"):
        read_chat_template(str(broken))
    from align_train.train import validate_config

    with pytest.raises(ConfigError, match="model.chat_template is 'no-such-template'"):  # before anything loads
        validate_config(compose_config("recipe=tiny/sft", "model.chat_template=no-such-template"))


def test_trls_template_path_is_owned_by_model_chat_template():
    from align_train.train import validate_config

    with pytest.raises(ConfigError, match="train.trainer_kwargs.chat_template_path: set it through 'model.chat_template'"):
        validate_config(compose_config("recipe=tiny/sft", "+train.trainer_kwargs.chat_template_path=x.jinja"))


@pytest.fixture
def base_model(tmp_path):
    """The tiny model as a base model ships: no chat template."""
    path = tmp_path / "base"
    shutil.copytree(DATA_DIR / "tiny-llama", path)
    (path / "chat_template.jinja").unlink()
    return path


def test_a_base_model_trains_on_conversations_once_a_template_is_set(base_model, tmp_path):
    with pytest.raises(DataError, match="no chat template .*set model.chat_template to a preset .*chatml"):
        run_recipe(tmp_path / "refused", "recipe=tiny/sft", f"model.name_or_path={base_model}", *FAST)
    result = run_recipe(tmp_path / "run", "recipe=tiny/sft", f"model.name_or_path={base_model}",
                        "model.chat_template=chatml", *FAST, "eval=none")
    assert result.steps == 4
    saved = AutoTokenizer.from_pretrained(tmp_path / "run" / "final")
    assert saved.chat_template == read_chat_template("chatml")  # evaluation and the next stage read it too
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]["chat_template"] == "chatml"


def test_a_turn_end_the_model_does_not_stop_on_is_named_before_training(tmp_path, capsys):
    # Llama 3's base checkpoints stop on <|end_of_text|> only; the instruct template ends turns with <|eot_id|>.
    base = tmp_path / "llama3-base"
    shutil.copytree(DATA_DIR / "tiny-random" / "llama", base)
    generation = json.loads((base / "generation_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(base)
    generation["eos_token_id"] = [tokenizer.convert_tokens_to_ids("<|end_of_text|>")]
    (base / "generation_config.json").write_text(json.dumps(generation))
    cfg = compose_config("model=tiny-random-llama", f"model.name_or_path={base}").model
    problem = template_stop_problem(load_tokenizer(cfg))
    assert "'<|eot_id|>'" in problem and "'<|end_of_text|>'" in problem and "never stops" in problem

    # The tiny model stops on <|im_end|>; Llama 3's template ends turns with tokens it does not even have.
    problem = template_stop_problem(load_tokenizer(compose_config("model.chat_template=llama3").model))
    assert "'<|im_end|>'" in problem and "<|eot_id|>" in problem

    run_recipe(tmp_path / "run", "recipe=tiny/sft", "model=tiny-random-llama", f"model.name_or_path={base}",
               *FAST, "eval=none", "train.max_steps=1")
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if "never stops" in line)
    assert "warning: model.chat_template:" in warning and "<|eot_id|>" in warning and "<|end_of_text|>" in warning
    assert err.index("never stops") < err.index("tuning:")  # said before the trainer is built

    clean = load_tokenizer(compose_config().model)  # the tiny model's own template and generation config agree
    assert template_stop_problem(clean) is None
