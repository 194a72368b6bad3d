"""Reference log-probs computed once per sweep: the cache beside the run directories.

A sweep over beta reads the reference's log-probs from the cache instead of running the reference
again, and trains to the same losses as a run that scores the reference in every step; any change
of what the log-probs depend on is a new entry, and a corrupt or partial entry is rebuilt, never read.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from datasets import Dataset
from trl import DPOTrainer

from align_train.objectives.ref_cache import ENTRY, ReferenceCache, ReferenceKey, data_digest, reference_key
from align_train.paths import DATA_DIR
from align_train.run_dir import RunDir
from tests.conftest import FAST, run_recipe

SWEEP = ["recipe=tiny/dpo", *FAST, "train.logging_steps=1", "eval=none", "train.learning_rate=1e-3",
         "data.eval_fraction=0"]


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.fixture
def reference_passes(monkeypatch):
    """How many batches the reference model scores (TRL's compute_ref_log_probs, while precomputing)."""
    calls = []
    inner = DPOTrainer.compute_ref_log_probs

    def counted(self, model, inputs):
        calls.append(len(inputs["prompt_ids"]) if "prompt_ids" in inputs else 1)
        return inner(self, model, inputs)

    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs", counted)
    return calls


def test_a_beta_sweep_scores_the_reference_once_and_trains_as_scoring_it_in_every_step(tmp_path, reference_passes):
    rows = (DATA_DIR / "tiny" / "preference.jsonl").read_text().splitlines()[:64]
    (tmp_path / "pairs.jsonl").write_text("\n".join(rows) + "\n")
    sweep, data = tmp_path / "runs", f"data.train.tiny_preference.path={tmp_path / 'pairs.jsonl'}"
    run_recipe(sweep / "beta-0.1", *SWEEP, data, "objective.precompute_ref_log_probs=true", "objective.beta=0.1")
    first = len(reference_passes)
    cache = RunDir(sweep / "beta-0.1").ref_cache
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    assert first > 0 and _key_and_rows(entry)[1] == 64

    run_recipe(sweep / "beta-0.3", *SWEEP, data, "objective.precompute_ref_log_probs=true", "objective.beta=0.3")
    assert len(reference_passes) == first, "the second point of the sweep ran the reference again"
    # The same beta with the reference scored inside every training step (no precomputation, no cache).
    run_recipe(tmp_path / "in-run", *SWEEP, data, "objective.beta=0.3")
    cached, in_run = losses(sweep / "beta-0.3"), losses(tmp_path / "in-run")
    assert len(cached) == 4 and cached == pytest.approx(in_run, abs=1e-5)
    assert losses(sweep / "beta-0.1") != pytest.approx(cached, abs=1e-5), "beta changed the loss"

    # A corrupt entry is detected, rebuilt and not read: the run trains exactly as before.
    for arrow in entry.rglob("*.arrow"):
        content = bytearray(arrow.read_bytes())
        content[len(content) // 2] ^= 0xFF
        arrow.write_bytes(bytes(content))
    run_recipe(sweep / "beta-0.3-again", *SWEEP, data, "objective.precompute_ref_log_probs=true", "objective.beta=0.3")
    assert len(reference_passes) > first, "the corrupt entry was used"
    assert losses(sweep / "beta-0.3-again") == losses(sweep / "beta-0.3")
    assert ReferenceCache(cache).problem(*_key_and_rows(entry)) is None, "rebuilt"

    # Another max length is another entry: computed again (every key, without training, below).
    before = len(reference_passes)
    run_recipe(sweep / "short", *SWEEP, data, "objective.precompute_ref_log_probs=true", "model.max_length=48")
    assert len(reference_passes) > before and len([p for p in cache.iterdir() if p.is_dir()]) == 2


def _key_and_rows(entry):
    record = json.loads((entry / ENTRY).read_text())
    return ReferenceKey(**record["key"]), record["rows"]


# --------------------------------------------------------------------------- keys and entries, without training


def tokenised(rows=6, shift=0) -> Dataset:
    return Dataset.from_dict({"prompt_ids": [[1, 2, 3 + i + shift] for i in range(rows)],
                              "chosen_ids": [[4] * (i + 1) for i in range(rows)],
                              "rejected_ids": [[5, 6] for _ in range(rows)]})


def stub_trainer(**changes) -> SimpleNamespace:
    args = SimpleNamespace(max_length=64, truncation_mode="keep_start", bf16=False, fp16=False, ld_alpha=None,
                           padding_free=False, use_logits_to_keep=False)
    trainer = SimpleNamespace(args=args, processing_class=SimpleNamespace(chat_template="{{ messages }}"),
                              _precompute_model_hash="weights-a", calculate_KL=None)
    for name, value in changes.items():
        target = args if hasattr(args, name) else trainer.processing_class if name == "chat_template" else trainer
        setattr(target, name, value)
    return trainer


def columns(rows=6) -> Dataset:
    return Dataset.from_dict({"ref_chosen_logps": [-1.0 - i for i in range(rows)],
                              "ref_rejected_logps": [-2.0 - i for i in range(rows)]})


def test_the_key_changes_with_everything_the_log_probs_depend_on_and_only_with_that():
    base = reference_key(stub_trainer(), tokenised())
    assert reference_key(stub_trainer(), tokenised()) == base and base.digest() == reference_key(
        stub_trainer(), tokenised()).digest()
    changed = {
        "reference weights": reference_key(stub_trainer(_precompute_model_hash="weights-b"), tokenised()),
        "tokenised data": reference_key(stub_trainer(), tokenised(shift=1)),
        "row order": reference_key(stub_trainer(), tokenised().select([1, 0, 2, 3, 4, 5])),
        "max length": reference_key(stub_trainer(max_length=32), tokenised()),
        "chat template": reference_key(stub_trainer(chat_template="{{ other }}"), tokenised()),
        "truncation": reference_key(stub_trainer(truncation_mode="keep_end"), tokenised()),
        "precision": reference_key(stub_trainer(bf16=True), tokenised()),
        "ld_alpha": reference_key(stub_trainer(ld_alpha=0.5), tokenised()),
    }
    digests = {name: key.digest() for name, key in changed.items()}
    assert base.digest() not in digests.values() and len(set(digests.values())) == len(digests)
    # Chunking and slicing of the Arrow data do not change the data's hash; its values do.
    assert data_digest(tokenised(8).select(range(6)).flatten_indices()) == data_digest(tokenised())
    # Unpaired feedback (KTO, BCO) carries a boolean label and text columns: hashed too.
    feedback = tokenised().add_column("label", [True, False] * 3).add_column("prompt", ["a", "b"] * 3)
    flipped = tokenised().add_column("label", [False, True] * 3).add_column("prompt", ["a", "b"] * 3)
    assert len({data_digest(feedback), data_digest(flipped), data_digest(tokenised())}) == 3


@pytest.mark.parametrize("field", ["reference", "data", "max_length", "chat_template", "settings"])
def test_changing_any_key_misses_the_entry(tmp_path, field):
    cache = ReferenceCache(tmp_path)
    key = ReferenceKey("weights-a", "data-a", 64, "template-a", {"trainer": "DPOTrainer"})
    cache.store(key, columns())
    assert cache.load(key, 6)["ref_chosen_logps"] == pytest.approx([-1.0 - i for i in range(6)])
    other = ReferenceKey(**{**key.__dict__, field: {"trainer": "KTOTrainer"} if field == "settings" else 32
                            if field == "max_length" else f"{field}-b"})
    assert cache.load(other, 6) is None and cache.load(key, 6) is not None


def _corrupt_arrow(entry):
    for arrow in entry.rglob("*.arrow"):
        arrow.write_bytes(arrow.read_bytes()[:-7] + b"garbage")


def _truncate_arrow(entry):
    for arrow in entry.rglob("*.arrow"):
        arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])


@pytest.mark.parametrize("damage, problem", [
    (lambda entry: (entry / ENTRY).unlink(), "entry.json is missing (a partial write)"),
    (lambda entry: (entry / ENTRY).write_text('{"version": 1, "ke'), "entry.json is unreadable"),
    (_corrupt_arrow, "does not match its checksum"),
    (_truncate_arrow, "does not match its checksum"),
    (lambda entry: next(entry.rglob("*.arrow")).unlink(), "is missing"),
])
def test_a_corrupt_or_partial_entry_is_named_removed_and_never_read(tmp_path, capsys, damage, problem):
    cache = ReferenceCache(tmp_path)
    key = ReferenceKey("weights-a", "data-a", 64, None, {})
    entry = cache.store(key, columns())
    damage(entry)
    assert problem in cache.problem(key, 6)
    assert cache.load(key, 6) is None and not entry.exists()
    err = capsys.readouterr().err
    assert f"the entry {entry} is not used: " in err and problem in err
    cache.store(key, columns())
    assert cache.problem(key, 6) is None and cache.load(key, 6).num_rows == 6


def test_an_entry_for_another_row_count_is_not_used_and_writes_leave_no_staging(tmp_path):
    cache = ReferenceCache(tmp_path)
    key = ReferenceKey("weights-a", "data-a", 64, None, {})
    cache.store(key, columns())
    assert "holds 6 rows, the dataset has 5" in cache.problem(key, 5)
    assert [p.name for p in tmp_path.iterdir()] == [key.digest()], "the staging directory is gone"
