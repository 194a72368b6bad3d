"""The objectives' losses equal a hand computation on a hand-built batch.

Log-probabilities for the hand computation come from our own scorer
(``align_train.evaluation.metrics``), not from TRL, so these tests check the whole adapter:
tokenisation, the reference model each tuning strategy provides, and TRL's loss.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from align_train.data import DataBundle
from align_train.evaluation.metrics import preference_scores
from align_train.inference import completion_logprobs
from align_train.models import frozen_copy, load_model, load_tokenizer
from align_train.objectives import make_objective
from align_train.objectives.dpo import trl_dpo_loss_types
from align_train.paths import DATA_DIR
from align_train.train import validate_config
from align_train.training_args import common_trainer_args
from align_train.tuning import make_tuning
from tests.conftest import compose_config


def pairs(n: int) -> list[dict]:
    lines = (DATA_DIR / "tiny" / "preference.jsonl").read_text().splitlines()[:n]
    return [{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in map(json.loads, lines)]


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.02) -> None:
    """Move the policy away from its reference so the loss is not the trivial log 2."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * scale)


def one_batch(cfg, rows: list[dict], fmt: str, tmp_path):
    """The trainer the run would build for ``cfg`` (reference copy or not, the strategy's preparation and trainer
    kwargs) over exactly ``rows``, its trainable parameters perturbed so policy and reference differ; returns
    (trainer, reference, tokenizer, the one batch holding ``rows``)."""
    objective, tuning = make_objective(cfg.objective), make_tuning(cfg.tuning)
    tokenizer = load_tokenizer(cfg.model)
    torch.manual_seed(0)
    model = load_model(cfg.model)
    reference = frozen_copy(model) if objective.needs_reference_model() and not tuning.provides_reference else None
    data = objective.prepare(model, tokenizer, DataBundle(format=fmt, train=Dataset.from_list(rows), eval=None), None)
    tuning.prepare(model, tokenizer, tmp_path / "tuning")
    model = tuning.apply(model)
    args = objective.make_args(common_trainer_args(cfg, str(tmp_path), 1), data)
    trainer = objective.build_trainer(model, reference, tokenizer, data, args, [], **tuning.trainer_kwargs())
    perturb(trainer.model)
    return trainer, reference, tokenizer, next(iter(trainer.get_train_dataloader()))


def trainer_loss(cfg, rows: list[dict], tmp_path, fmt: str, backward: bool = False, return_trainer: bool = False,
                 train_mode: bool = False):
    """TRL's loss on one batch holding exactly ``rows``, and the models it used (``one_batch``)."""
    trainer, reference, tokenizer, batch = one_batch(cfg, rows, fmt, tmp_path)
    trainer.model.train(train_mode)  # training mode: state kept across steps (BCO's reward shift) updates
    with torch.set_grad_enabled(backward):
        loss = trainer.compute_loss(trainer.model, batch)
        if backward:
            loss.backward()
    trainer.model.eval()
    if return_trainer:
        return loss.item(), trainer.model, reference, tokenizer, trainer
    return loss.item(), trainer.model, reference, tokenizer


def reference_scorer(model, reference):
    """The reference log-prob function: the frozen copy, or the peft model with adapters disabled."""
    if reference is not None:
        return lambda fn: fn(reference)

    def with_adapters_disabled(fn):
        with model.disable_adapter():
            return fn(model)

    return with_adapters_disabled


@pytest.mark.parametrize("tuning", ["full", "lora", "freeze"])
def test_dpo_sigmoid_loss_matches_hand_computation(tmp_path, tuning):
    beta = 0.5
    cfg = compose_config(
        "recipe=tiny/dpo", f"tuning={tuning}", f"objective.beta={beta}",
        "train.global_batch_size=4", "train.per_device_batch_size=4",
    )
    rows = pairs(4)
    loss, model, reference, tokenizer = trainer_loss(cfg, rows, tmp_path, "preference")

    policy = preference_scores(model, tokenizer, rows)
    ref = reference_scorer(model, reference)(lambda m: preference_scores(m, tokenizer, rows))
    logits = [beta * ((pc - rc) - (pr - rr)) for (pc, pr), (rc, rr) in zip(policy, ref)]
    expected = sum(-F.logsigmoid(torch.tensor(x)).item() for x in logits) / len(logits)
    assert abs(expected - math.log(2)) > 1e-3, "the perturbation must move the policy off its reference"
    assert loss == pytest.approx(expected, rel=1e-4, abs=1e-5)
    if tuning == "lora":  # the reference is the base with adapters disabled, not a copy of the adapter
        assert set(model.peft_config) == {"default"}
    else:  # full-type tuning: a separate frozen copy that training cannot move
        assert reference is not None and not any(p.requires_grad for p in reference.parameters())


def test_dpo_weighted_loss_combination_matches_hand_computation(tmp_path):
    beta, weights = 0.2, (0.7, 0.3)
    cfg = compose_config(
        "recipe=tiny/dpo", f"objective.beta={beta}", "objective.loss_type=[sigmoid,hinge]",
        f"objective.loss_weights=[{weights[0]},{weights[1]}]",
        "train.global_batch_size=4", "train.per_device_batch_size=4",
    )
    rows = pairs(4)
    loss, model, reference, tokenizer = trainer_loss(cfg, rows, tmp_path, "preference")
    policy = preference_scores(model, tokenizer, rows)
    ref = preference_scores(reference, tokenizer, rows)
    deltas = torch.tensor([(pc - rc) - (pr - rr) for (pc, pr), (rc, rr) in zip(policy, ref)])
    sigmoid = (-F.logsigmoid(beta * deltas)).mean().item()
    hinge = torch.relu(1 - beta * deltas).mean().item()
    assert loss == pytest.approx(weights[0] * sigmoid + weights[1] * hinge, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_kto_loss_matches_hand_computation(tmp_path, tuning):
    beta, w_good, w_bad = 0.3, 1.0, 1.5
    cfg = compose_config(
        "recipe=tiny/kto", f"tuning={tuning}", f"objective.beta={beta}",
        f"objective.desirable_weight={w_good}", f"objective.undesirable_weight={w_bad}",
        "train.global_batch_size=4", "train.per_device_batch_size=4",
    )
    source = pairs(4)
    rows = [  # unpaired: different prompts, mixed labels, in a fixed (sequential) order
        {"prompt": source[0]["prompt"], "completion": source[0]["chosen"], "label": True},
        {"prompt": source[1]["prompt"], "completion": source[1]["rejected"], "label": False},
        {"prompt": source[2]["prompt"], "completion": source[2]["chosen"], "label": True},
        {"prompt": source[3]["prompt"], "completion": source[3]["rejected"], "label": False},
    ]
    loss, model, reference, tokenizer = trainer_loss(cfg, rows, tmp_path, "feedback")

    def logps(m, pairs_):
        return [s for s, _ in completion_logprobs(m, tokenizer, pairs_)]

    matched = [(r["prompt"], r["completion"]) for r in rows]
    # KTO's KL estimate pairs each prompt with the previous row's completion (rotation by one).
    mismatched = [(rows[i]["prompt"], rows[i - 1]["completion"]) for i in range(len(rows))]
    ref = reference_scorer(model, reference)
    ratios = [p - r for p, r in zip(logps(model, matched), ref(lambda m: logps(m, matched)))]
    kl_terms = [p - r for p, r in zip(logps(model, mismatched), ref(lambda m: logps(m, mismatched)))]
    kl = max(sum(kl_terms) / len(kl_terms), 0.0)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    good = [w_good * (1 - sig(beta * (x - kl))) for x, r in zip(ratios, rows) if r["label"]]
    bad = [w_bad * (1 - sig(beta * (kl - x))) for x, r in zip(ratios, rows) if not r["label"]]
    expected = (sum(good) + sum(bad)) / len(rows)
    assert loss == pytest.approx(expected, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("loss_type", trl_dpo_loss_types())
def test_every_trl_dpo_loss_type_trains(tmp_path, loss_type):
    """Each loss type TRL offers gives a finite loss whose gradient reaches the policy."""
    extra = ["objective.label_smoothing=1e-3"] if loss_type == "exo_pair" else []
    cfg = compose_config(
        "recipe=tiny/dpo", f"objective.loss_type=[{loss_type}]", *extra,
        "train.global_batch_size=4", "train.per_device_batch_size=4",
    )
    validate_config(cfg)
    loss, model, _, _ = trainer_loss(cfg, pairs(4), tmp_path, "preference", backward=True)
    assert math.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_padding_free_dpo_gives_the_padded_loss(tmp_path):
    """Padding-free DPO packs each batch into one row: the loss is the padded batch's."""
    overrides = ["recipe=tiny/dpo", "train.global_batch_size=4", "train.per_device_batch_size=4"]
    padded, *_ = trainer_loss(compose_config(*overrides), pairs(4), tmp_path / "a", "preference")
    free, *_ = trainer_loss(compose_config(*overrides, "objective.padding_free=true"), pairs(4), tmp_path / "b", "preference")
    assert free == pytest.approx(padded, rel=1e-5)
