"""Every common data layout loads, detected or named, from fixtures that reproduce the published schemas; the
dataset of every shipped recipe loads through that recipe's own data config from a local copy in its hub
layout; the bundled example sets make way for the user's own; a source is read once per node and cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align_train.config import SourceConfig
from align_train.data import load_data
from align_train.data.sources import read_source
from align_train.errors import DataError
from align_train.paths import RECIPES_DIR
from tests import hub_fixtures as hub
from tests.conftest import compose_config
from tests.test_data import DPO, KTO, SFT, data_cfg, write_jsonl


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    return hub.write_hub_mirror(tmp_path_factory.mktemp("hub"))


def turn(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def read(path, **kwargs):
    return read_source("data.train.x", SourceConfig(path=str(path), **kwargs), skip_invalid_rows=False)


# --------------------------------------------------------------------------- layouts, one each


def test_implicit_prompt_conversational_pairs_become_explicit(tmp_path):
    """trl-lib/ultrafeedback_binarized's layout: the shared turns (here two) are the prompt, as extract_prompt."""
    history = [turn("user", "Hi, can you help me plan a trip?"), turn("assistant", "Of course. Where to?"),
               turn("user", "Lisbon, for three days.")]
    rows = [{"chosen": history + [turn("assistant", "Day one: Alfama and the castle.")],
             "rejected": history + [turn("assistant", "I don't know Lisbon.")], "score_chosen": 8.0,
             "score_rejected": 2.0}]
    src = read(write_jsonl(tmp_path / "implicit.jsonl", rows))
    assert (src.layout, src.format) == ("implicit_preference", "preference")
    assert src.rows == [{"prompt": history, "chosen": [turn("assistant", "Day one: Alfama and the castle.")],
                         "rejected": [turn("assistant", "I don't know Lisbon.")]}]


def test_implicit_prompt_plain_text_pairs(tmp_path):
    """The standard variant: the common leading text is the prompt (TRL's own example)."""
    src = read(write_jsonl(tmp_path / "implicit.jsonl", [{"chosen": "The sky is blue.",
                                                          "rejected": "The sky is green."}]))
    assert src.layout == "implicit_preference"
    assert src.rows == [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}]


@pytest.mark.parametrize("row,reason", [
    ({"chosen": [turn("user", "a?"), turn("assistant", "x")], "rejected": [turn("user", "b?"), turn("assistant", "y")]},
     "share no prompt"),
    ({"chosen": "Red.", "rejected": "Blue."}, "share no prompt"),
    ({"chosen": "Same answer.", "rejected": "Same answer."}, "'chosen' and 'rejected' are identical"),
    ({"chosen": [turn("system", "Be kind."), turn("assistant", "x")],
      "rejected": [turn("system", "Be kind."), turn("assistant", "y")]}, "hold no user turn"),
    ({"chosen": [turn("user", "q"), turn("assistant", "x")], "rejected": "y"}, "mixes plain strings and message lists"),
])
def test_implicit_prompt_pairs_that_share_no_prompt_are_named(tmp_path, row, reason):
    good = {"chosen": [turn("user", "q"), turn("assistant", "good")], "rejected": [turn("user", "q"),
                                                                                 turn("assistant", "bad")]}
    if isinstance(row["chosen"], str) and isinstance(row["rejected"], str):
        good = {"chosen": "The answer is yes.", "rejected": "The answer is no."}
    path = write_jsonl(tmp_path / "pairs.jsonl", [good, row])
    with pytest.raises(DataError, match=rf"{path} line 2: .*{reason}"):
        read(path, format="implicit_preference")


def test_h4_layout_string_prompt_repeated_in_the_conversations(tmp_path):
    """HuggingFaceH4/ultrafeedback_binarized: string prompt, conversations that repeat it, extra columns."""
    row = hub.H4_ULTRAFEEDBACK["train_prefs"][0]
    src = read(write_jsonl(tmp_path / "h4.jsonl", [row]))
    assert (src.layout, src.format) == ("preference", "preference")
    assert src.rows == [{"prompt": [turn("user", row["prompt"])], "chosen": [turn("assistant", row["chosen"][1]["content"])],
                         "rejected": [turn("assistant", row["rejected"][1]["content"])]}]


def test_string_prompt_beside_answer_only_conversations_becomes_the_user_turn(tmp_path):
    row = {"prompt": "Name a fruit.", "chosen": [turn("assistant", "Apple.")], "rejected": [turn("assistant", "Car.")]}
    assert read(write_jsonl(tmp_path / "p.jsonl", [row])).rows == [
        {"prompt": [turn("user", "Name a fruit.")], "chosen": [turn("assistant", "Apple.")],
         "rejected": [turn("assistant", "Car.")]}]


@pytest.mark.parametrize("conversational", [False, True])
def test_explicit_prompt_chosen_rejected(tmp_path, conversational):
    if conversational:
        row = {"prompt": [turn("system", "Be brief."), turn("user", "2+2?")], "chosen": [turn("assistant", "4")],
               "rejected": [turn("assistant", "5")]}
    else:
        row = {"prompt": "2+2=", "chosen": "4", "rejected": "5"}
    src = read(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert (src.layout, src.rows) == ("preference", [row])


@pytest.mark.parametrize("conversational", [False, True])
def test_prompt_completion_sft(tmp_path, conversational):
    """TRL's prompt/completion SFT data reaches the SFT objective as it is (format 'completion')."""
    row = ({"prompt": [turn("user", "Capital of Italy?")], "completion": [turn("assistant", "Rome.")]}
           if conversational else {"prompt": "The capital of Italy is", "completion": " Rome."})
    bundle = load_data(data_cfg({"c": write_jsonl(tmp_path / "c.jsonl", [row] * 3)}), SFT, "sft")
    assert bundle.format == "completion" and bundle.report["sources"]["c"]["layout"] == "completion"
    assert bundle.train.to_list() == [row] * 3


def test_prompt_completion_sft_trains_on_the_completion_only(tmp_path):
    """TRL's default for prompt/completion data: the loss is on completion tokens, the prompt's labels masked."""
    from align_train.models import load_model, load_tokenizer
    from align_train.objectives import make_objective
    from align_train.training_args import common_trainer_args

    rows = [{"prompt": [turn("user", f"Say the number {i}.")], "completion": [turn("assistant", f"{i}")]}
            for i in range(8)]
    cfg = compose_config("recipe=tiny/sft", "eval=none", f"output_dir={tmp_path / 'run'}",
                         "++data.train={mine:{path:" + str(write_jsonl(tmp_path / "c.jsonl", rows)) + "}}",
                         "data.eval_fraction=0")
    objective = make_objective(cfg.objective)
    bundle = load_data(cfg.data, objective.accepts, objective.name)
    assert bundle.format == "completion" and len(bundle.train) == 8  # the bundled SFT set made way
    tokenizer = load_tokenizer(cfg.model)
    args = objective.make_args(common_trainer_args(cfg, str(tmp_path / "run"), 1), bundle)
    assert args.assistant_only_loss is False and args.completion_only_loss in (None, True)
    trainer = objective.build_trainer(load_model(cfg.model), None, tokenizer, bundle, args, [])
    batch = next(iter(trainer.get_train_dataloader()))
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        text = tokenizer.decode(ids[labels != -100])
        assert text.strip().rstrip("<|im_end|>").strip().isdigit(), text  # only the answer (and its end) is learnt
        assert (labels[mask.bool()] == -100).sum() > 3  # the prompt's tokens are masked


def test_messages_sft(tmp_path):
    row = {"messages": [turn("system", "Be brief."), turn("user", "Hi"), turn("assistant", "Hello.")], "id": 7}
    bundle = load_data(data_cfg({"m": write_jsonl(tmp_path / "m.jsonl", [row])}), SFT, "sft")
    assert bundle.format == "messages" and bundle.train.to_list() == [{"messages": row["messages"]}]


@pytest.mark.parametrize("labels", [[True, False], [1, 0]])
def test_unpaired_feedback_with_bool_or_01_labels(tmp_path, labels):
    rows = [{"prompt": "p1", "completion": "c1", "label": labels[0]},
            {"prompt": "p2", "completion": "c2", "label": labels[1]}]
    bundle = load_data(data_cfg({"f": write_jsonl(tmp_path / "f.jsonl", rows)}), KTO, "kto")
    assert sorted(bundle.train.to_list(), key=lambda r: r["prompt"]) == [
        {"prompt": "p1", "completion": "c1", "label": True}, {"prompt": "p2", "completion": "c2", "label": False}]


def test_01_labels_from_csv_and_parquet(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"prompt": ["a", "b"], "completion": ["x", "y"], "label": [1, 0]})
    frame.to_csv(tmp_path / "f.csv", index=False)
    frame.to_parquet(tmp_path / "f.parquet")
    for name in ("f.csv", "f.parquet"):
        assert sorted(read(tmp_path / name).rows, key=lambda r: r["prompt"]) == [
            {"prompt": "a", "completion": "x", "label": True}, {"prompt": "b", "completion": "y", "label": False}]


def test_beavertails_style_safety_labels(tmp_path):
    rows = hub.BEAVERTAILS["30k_train"]
    src = read(write_jsonl(tmp_path / "bt.jsonl", rows))
    assert (src.layout, src.format) == ("safety_labels", "feedback")
    assert src.rows == [{"prompt": r["prompt"], "completion": r["response"], "label": r["is_safe"]} for r in rows]
    bad = write_jsonl(tmp_path / "bad.jsonl", rows[:1] + [{**rows[1], "is_safe": "maybe"}])
    with pytest.raises(DataError, match=rf"{bad} line 2: 'is_safe' is 'maybe'; expected true or false"):
        read(bad)


def test_documents(tmp_path):
    src = read(write_jsonl(tmp_path / "d.jsonl", [{"text": "One.", "source": "web"}, {"text": "Two."}]))
    assert (src.layout, src.rows) == ("documents", [{"text": "One."}, {"text": "Two."}])


def test_format_setting_names_a_layout_or_a_format(tmp_path):
    """Detection is overridable: the H4 file read for its `messages` column instead of its pairs."""
    path = write_jsonl(tmp_path / "h4.jsonl", hub.H4_ULTRAFEEDBACK["train_prefs"])
    assert read(path).layout == "preference"
    assert read(path, format="messages").rows == [{"messages": r["messages"]} for r in hub.H4_ULTRAFEEDBACK["train_prefs"]]
    assert read(path, format="implicit_preference").rows == read(path).rows  # the same prompt either way
    with pytest.raises(DataError, match=r"data\.train\.x\.format: 'pairs' is unknown; expected one of preference, "
                                        r"implicit_preference"):
        read(path, format="pairs")


def test_arrow_validation_names_the_physical_line(tmp_path):
    """Rows validated in Arrow (no Python reading of the file) still name the line, blank lines counted."""
    rows = [{"prompt": "p1", "chosen": "a", "rejected": "b"}, {"prompt": "", "chosen": "a", "rejected": "b"},
            {"prompt": "p3", "chosen": "a", "rejected": "b"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows, blank_lines_before={1: 2, 2: 1})
    with pytest.raises(DataError) as err:
        read(path)
    assert f"{path} line 4: 'prompt' is empty" in str(err.value) and "1 invalid row(s)" in str(err.value)


def test_parquet_invalid_row_named_by_file_and_row(tmp_path):
    import pandas as pd

    path = tmp_path / "p.parquet"
    pd.DataFrame({"prompt": ["a", "b", "c"], "chosen": ["x", "y", "z"], "rejected": ["x2", "y", "z2"]}).to_parquet(path)
    with pytest.raises(DataError, match=rf"{path} row 2: 'chosen' and 'rejected' are identical"):
        read(path)


def test_directory_in_hub_layout_reads_the_split_only(tmp_path):
    """A local directory with split-named files is read as the hub reads it: split=test gets test rows only."""
    folder = tmp_path / "local"
    (folder / "data").mkdir(parents=True)
    write_jsonl(folder / "data" / "train-00000-of-00001.jsonl", [{"text": "train row"}])
    write_jsonl(folder / "data" / "test-00000-of-00001.jsonl", [{"text": "test row"}])
    assert read(folder).rows == [{"text": "train row"}]
    assert read(folder, split="test").rows == [{"text": "test row"}]
    with pytest.raises(DataError, match=r"a dataset in the hub's layout\) cannot be loaded .*split=validation"):
        read(folder, split="validation")


# --------------------------------------------------------------------------- hub layouts and shipped recipes


def _hub_sources(cfg) -> list[tuple[str, object]]:
    return [(f"data.{part}.{name}", s) for part in ("train", "eval") for name, s in cfg.data[part].items()
            if not Path(s.path).exists()]


SHIPPED_RECIPES = sorted(p.relative_to(RECIPES_DIR).with_suffix("").as_posix() for p in RECIPES_DIR.rglob("*.yaml"))
HUB_GROUPS = {"ultrafeedback_binarized": "dpo", "ultrachat_200k": "sft", "kto_mix_14k": "kto", "beavertails": "kto"}


def _expected(name: str, split: str, fmt: str) -> list[dict]:
    """The rows a run must get from a fixture split, computed here by hand from the published schema."""
    rows = hub.SPLITS[name][split]
    if name == "PKU-Alignment/BeaverTails":
        return [{"prompt": r["prompt"], "completion": r["response"], "label": r["is_safe"]} for r in rows]
    if name == "HuggingFaceH4/ultrachat_200k":
        return [{"messages": [turn(t["role"], t["content"]) for t in r["messages"]]} for r in rows]
    if name == "trl-lib/kto-mix-14k":
        return [{"prompt": [turn("user", r["prompt"][0]["content"])],
                 "completion": [turn("assistant", r["completion"][0]["content"])], "label": r["label"]} for r in rows]
    pairs = [{"prompt": [turn("user", r["chosen"][0]["content"])],
              "chosen": [turn("assistant", r["chosen"][1]["content"])],
              "rejected": [turn("assistant", r["rejected"][1]["content"])]} for r in rows]
    if fmt == "feedback":
        return [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
                for p in pairs for side in ("chosen", "rejected")]
    return pairs


def _canonical(rows: list[dict]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in rows)


def _check_loads_from_mirror(cfg, mirror: Path, monkeypatch) -> dict:
    import datasets

    from align_train.objectives import make_objective

    calls = []
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    sources = _hub_sources(cfg)
    assert sources, "no hub dataset in this config"
    cfg.data.hub_mirror = str(mirror)
    objective = make_objective(cfg.objective)
    bundle = load_data(cfg.data, objective.accepts, objective.name)
    # the same code path as the hub: datasets.load_dataset on the local copy, with the recipe's split
    assert sorted((a[0], k.get("split")) for a, k in calls) == sorted(
        (str(mirror / s.path), s.split) for _, s in sources)
    train = [s for key, s in sources if key.startswith("data.train.")]
    held = [s for key, s in sources if key.startswith("data.eval.")]
    assert _canonical(bundle.train.to_list()) == _canonical(
        [r for s in train for r in _expected(s.path, s.split, bundle.format)])
    assert _canonical(bundle.eval.to_list()) == _canonical(
        [r for s in held for r in _expected(s.path, s.split, bundle.format)])
    return bundle.report


@pytest.mark.parametrize("recipe", [r for r in SHIPPED_RECIPES if _hub_sources(compose_config(f"recipe={r}"))])
def test_every_shipped_recipe_loads_its_dataset_from_a_local_copy_in_hub_layout(recipe, mirror, monkeypatch):
    report = _check_loads_from_mirror(compose_config(f"recipe={recipe}"), mirror, monkeypatch)
    assert all(s["skipped_rows"] == 0 for s in report["sources"].values())


@pytest.mark.parametrize("group", sorted(HUB_GROUPS))
def test_every_hub_data_group_loads_from_a_local_copy_in_hub_layout(group, mirror, monkeypatch):
    _check_loads_from_mirror(compose_config(f"data={group}", f"objective={HUB_GROUPS[group]}"), mirror, monkeypatch)


def test_every_data_group_naming_the_hub_is_covered():
    groups = {p.stem for p in (RECIPES_DIR.parent / "conf" / "data").glob("*.yaml")}
    assert {g for g in groups if _hub_sources(compose_config(f"data={g}"))} == set(HUB_GROUPS)


def test_h4_ultrafeedback_splits_are_named_prefs(mirror):
    cfg = data_cfg({"h4": SourceConfig(path="HuggingFaceH4/ultrafeedback_binarized", split="train_prefs")},
                   eval={"h4": SourceConfig(path="HuggingFaceH4/ultrafeedback_binarized", split="test_prefs")},
                   hub_mirror=str(mirror))
    bundle = load_data(cfg, DPO, "dpo")
    assert len(bundle.train) == 3 and len(bundle.eval) == 2
    assert _canonical(bundle.train.to_list()) == _canonical(
        _expected("HuggingFaceH4/ultrafeedback_binarized", "train_prefs", "preference"))
    with pytest.raises(DataError, match=r"split=train\b.*Unknown split"):
        load_data(data_cfg({"h4": SourceConfig(path="HuggingFaceH4/ultrafeedback_binarized")},
                           hub_mirror=str(mirror)), DPO, "dpo")


def test_a_hub_layout_directory_can_be_named_as_a_path(mirror):
    path = mirror / "trl-lib" / "ultrafeedback_binarized"
    assert read(path, split="test").rows == _expected("trl-lib/ultrafeedback_binarized", "test", "preference")


def test_a_hub_name_missing_from_the_mirror_is_named(mirror, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("tried the hub"))
    with pytest.raises(DataError) as err:
        load_data(data_cfg({"x": SourceConfig(path="someone/elsewhere")}, hub_mirror=str(mirror)), DPO, "dpo")
    assert "data.train.x.path: 'someone/elsewhere' is not in data.hub_mirror" in str(err.value)
    assert str(mirror / "someone" / "elsewhere") in str(err.value)


# --------------------------------------------------------------------------- your data replaces ours


def _own_pairs(tmp_path) -> Path:
    rows = [{"prompt": [turn("user", f"my question {i}")], "chosen": [turn("assistant", f"good {i}")],
             "rejected": [turn("assistant", f"bad {i}")]} for i in range(36)]
    return write_jsonl(tmp_path / "mine.jsonl", rows)


def _load(cfg):
    from align_train.objectives import make_objective

    objective = make_objective(cfg.objective)
    return load_data(cfg.data, objective.accepts, objective.name)


def test_a_recipe_naming_its_own_source_trains_on_it_alone(tmp_path, monkeypatch):
    from align_train.recipes import register_recipes

    mine = _own_pairs(tmp_path)
    (tmp_path / "recipes" / "user").mkdir(parents=True)
    (tmp_path / "recipes" / "user" / "mine.yaml").write_text(
        f"# @package _global_\ndata:\n  train:\n    mine:\n      path: {mine}\n")
    monkeypatch.setenv("ALIGN_TRAIN_RECIPES", str(tmp_path / "recipes"))
    register_recipes()
    bundle = _load(compose_config("recipe=user/mine"))
    assert set(bundle.report["sources"]) == {"mine"} and set(bundle.report["set_aside"]) == {"tiny_preference"}
    # the default group's eval_fraction (0.1) applies to the user's rows: 36 -> 4 held out, 32 trained
    assert bundle.report["train_rows"] == 32 and bundle.report["eval_rows"] == 4
    assert all(r["prompt"][0]["content"].startswith("my question") for r in bundle.train.to_list())


def test_a_command_line_naming_its_own_source_trains_on_it_alone(tmp_path):
    mine = _own_pairs(tmp_path)
    for recipe in ("recipe=tiny/dpo", "recipe=tiny/kto"):
        bundle = _load(compose_config(recipe, "++data.train={mine:{path:" + str(mine) + "}}"))
        assert set(bundle.report["sources"]) == {"mine"}
        assert all(r["prompt"][0]["content"].startswith("my question") for r in bundle.train.to_list())


def test_mixing_in_the_bundled_set_is_a_choice(tmp_path):
    mine = _own_pairs(tmp_path)
    bundle = _load(compose_config("recipe=tiny/dpo", "++data.train={mine:{path:" + str(mine) + "}}",
                                  "data.train.tiny_preference.fallback=false"))
    sources = bundle.report["sources"]
    assert set(sources) == {"tiny_preference", "mine"} and "set_aside" not in bundle.report
    assert bundle.report["train_rows"] == sources["tiny_preference"]["train_rows"] + sources["mine"]["train_rows"]


def test_the_bundled_set_trains_when_nothing_else_is_named():
    bundle = _load(compose_config("recipe=tiny/dpo"))
    assert set(bundle.report["sources"]) == {"tiny_preference"} and "set_aside" not in bundle.report


def test_the_summary_lists_rows_per_source(tmp_path):
    from align_train.summary import RunResult, data_summary

    mine = _own_pairs(tmp_path)
    report = _load(compose_config("recipe=tiny/dpo", "++data.train={mine:{path:" + str(mine) + "}}")).report
    data = data_summary(report)
    assert data["sources"]["mine"]["train_rows"] == 32 and data["sources"]["mine"]["heldout_rows"] == 4
    result = RunResult(run_dir="r", final_dir="r/final", saved="full", recipe="x", objective="dpo", tuning="full",
                       model="m", parameters={"trainable": 1, "total": 1}, data=data)
    text = result.render()
    assert "mine               32 train / 4 held out  (preference:" in text
    assert "tiny_preference    set aside (bundled example data" in text


# --------------------------------------------------------------------------- once per node, cached


class FakeState:
    def __init__(self, main: bool, log: list):
        self.num_processes, self.is_local_main_process, self.log = 2, main, log

    def wait_for_everyone(self):
        self.log.append("barrier")


@pytest.mark.parametrize("main", [True, False])
def test_each_node_main_process_reads_first_and_reaches_the_barrier_even_on_failure(main, monkeypatch):
    import align_train.distributed as distributed
    from align_train.data.mixture import node_main_first

    log: list = []
    monkeypatch.setattr(distributed, "process_state", lambda: FakeState(main, log))
    assert node_main_first(lambda: log.append("read") or "rows") == "rows"
    assert log == (["read", "barrier"] if main else ["barrier", "read"])
    log.clear()

    def fail():
        log.append("read")
        raise DataError("bad row")

    with pytest.raises(DataError):
        node_main_first(fail)
    assert log == (["read", "barrier"] if main else ["barrier", "read"])


def test_a_second_read_comes_from_the_cache(tmp_path, monkeypatch):
    """What another process of the node does after the main one: no row is validated again."""
    from align_train.data import sources

    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(50)])
    first = read(path)
    calls = []
    real = sources.normalise_row
    monkeypatch.setattr(sources, "normalise_row", lambda *a: calls.append(a) or real(*a))
    again = read(path)
    assert calls == [] and again.rows == first.rows
    assert {f["filename"] for f in again.dataset.cache_files} == {f["filename"] for f in first.dataset.cache_files}
