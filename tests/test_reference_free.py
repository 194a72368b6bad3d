"""SimPO, ORPO and CPO on the custom-loss base: each loss equals a hand computation and TRL's own (experimental)
implementation, its trainer's loss on a real batch equals the hand computation from our scorer, it trains
the tiny model, it composes with full, LoRA and NeST tuning, and no reference model is ever loaded."""

from __future__ import annotations

import math
import types

import pytest
import torch

from align_train.inference import completion_logprobs
from align_train.objectives.cpo import CPOLoss
from align_train.objectives.losses import LossContext, PairedLogps, PairedLossTrainer
from align_train.objectives.orpo import ORPOLoss, log1mexp
from align_train.objectives.simpo import SimPOLoss
from tests.conftest import compose_config, run_recipe
from tests.test_losses import pairs, trainer_loss

CTX = LossContext(training=True, accelerator=None)
# Fixed log-probs of three pairs: summed, and the completions' token counts.
CHOSEN, REJECTED = torch.tensor([-12.0, -30.0, -7.5]), torch.tensor([-15.0, -25.0, -20.0])
CHOSEN_TOKENS, REJECTED_TOKENS = torch.tensor([6, 10, 5]), torch.tensor([5, 10, 8])
NLL = torch.tensor(1.7)


def batch() -> PairedLogps:
    return PairedLogps(CHOSEN, REJECTED, CHOSEN_TOKENS, REJECTED_TOKENS, chosen_nll=NLL)


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_simpo_loss_is_the_papers_formula():
    beta, gamma, eps = 2.0, 0.8, 0.1
    loss, metrics = SimPOLoss(beta, gamma, eps)(batch(), CTX)
    expected = 0.0
    for c, r, nc, nr in zip(CHOSEN.tolist(), REJECTED.tolist(), CHOSEN_TOKENS.tolist(), REJECTED_TOKENS.tolist()):
        z = beta * (c / nc - r / nr) - gamma
        expected += -(1 - eps) * math.log(sig(z)) - eps * math.log(sig(-z))
    assert loss.item() == pytest.approx(expected / 3, rel=1e-6)
    assert metrics["rewards/chosen"].tolist() == pytest.approx((beta * CHOSEN / CHOSEN_TOKENS).tolist())


def test_orpo_loss_is_the_papers_formula():
    beta = 0.25
    loss, _ = ORPOLoss(beta)(batch(), CTX)
    terms = []
    for c, r, nc, nr in zip(CHOSEN.tolist(), REJECTED.tolist(), CHOSEN_TOKENS.tolist(), REJECTED_TOKENS.tolist()):
        pc, pr = math.exp(c / nc), math.exp(r / nr)
        log_odds = math.log(pc / (1 - pc)) - math.log(pr / (1 - pr))
        terms.append(math.log(sig(log_odds)))
    assert loss.item() == pytest.approx(NLL.item() - beta * sum(terms) / 3, rel=1e-6)


def test_cpo_loss_is_the_papers_formula():
    beta, alpha, eps = 0.1, 0.7, 0.05
    loss, _ = CPOLoss(beta, alpha, eps)(batch(), CTX)
    expected = sum(-(1 - eps) * math.log(sig(beta * (c - r))) - eps * math.log(sig(-beta * (c - r)))
                   for c, r in zip(CHOSEN.tolist(), REJECTED.tolist())) / 3
    assert loss.item() == pytest.approx(expected + alpha * NLL.item(), rel=1e-6)


def test_log1mexp_is_stable_on_both_sides():
    x = torch.tensor([-1e-6, -0.1, -math.log(2), -5.0, -50.0], dtype=torch.float64)
    assert torch.allclose(log1mexp(x), torch.log(1 - torch.exp(x)), rtol=1e-6)


# --------------------------------------------------------------------------- TRL's experimental trainers


def trl_stub(**fields):
    """The attributes TRL's loss methods read from their trainer."""
    return types.SimpleNamespace(**{"accelerator": types.SimpleNamespace(device=torch.device("cpu")), "alpha": 0.0,
                                    "label_smoothing": 0.0, **fields})


def test_simpo_and_cpo_match_trl_cpo_trainer():
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    beta, gamma, eps = 2.0, 0.8, 0.1
    stub = trl_stub(beta=beta, loss_type="simpo", simpo_gamma=gamma, label_smoothing=eps)
    # TRL's SimPO takes the length-normalised log-probs as input (average_log_prob for loss_type="simpo").
    trl_losses, _, _ = CPOTrainer.cpo_loss(stub, CHOSEN / CHOSEN_TOKENS, REJECTED / REJECTED_TOKENS)
    ours, _ = SimPOLoss(beta, gamma, eps)(batch(), CTX)
    assert ours.item() == pytest.approx(trl_losses.mean().item(), rel=1e-6)

    stub = trl_stub(beta=0.1, loss_type="sigmoid", label_smoothing=eps)
    trl_losses, _, _ = CPOTrainer.cpo_loss(stub, CHOSEN, REJECTED)
    ours, _ = CPOLoss(0.1, alpha=1.0, label_smoothing=eps)(batch(), CTX)
    assert ours.item() == pytest.approx(trl_losses.mean().item() + 1.0 * NLL.item(), rel=1e-6)  # TRL adds cpo_alpha*nll


def test_orpo_matches_trl_orpo_trainer():
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    beta = 0.25
    losses, _, _, _, _ = ORPOTrainer.odds_ratio_loss(trl_stub(beta=beta), CHOSEN / CHOSEN_TOKENS,
                                                     REJECTED / REJECTED_TOKENS)
    ours, _ = ORPOLoss(beta)(batch(), CTX)
    assert ours.item() == pytest.approx(NLL.item() - losses.mean().item(), rel=1e-6)  # TRL: nll - losses.mean()


# --------------------------------------------------------------------------- through the trainer


@pytest.mark.parametrize("name", ["simpo", "orpo", "cpo"])
def test_trainer_loss_on_a_batch_matches_the_hand_computation(tmp_path, name):
    """The whole path: TRL's tokenisation and batching, our per-sequence log-probs, the loss."""
    cfg = compose_config(f"recipe=tiny/{name}", "train.global_batch_size=4", "train.per_device_batch_size=4")
    rows = pairs(4)
    loss, model, reference, tokenizer = trainer_loss(cfg, rows, tmp_path, "preference")
    assert reference is None, "a reference-free objective gets no reference copy"
    scored = [completion_logprobs(model, tokenizer, [(r["prompt"], r[k]) for r in rows]) for k in ("chosen", "rejected")]
    (chosen, n_chosen), (rejected, n_rejected) = [([s for s, _ in x], [n for _, n in x]) for x in scored]
    nll = -sum(chosen) / sum(n_chosen)
    logps = PairedLogps(torch.tensor(chosen), torch.tensor(rejected), torch.tensor(n_chosen),
                        torch.tensor(n_rejected), chosen_nll=torch.tensor(nll))
    loss_fn = {"simpo": lambda o: SimPOLoss(o.beta, o.gamma, o.label_smoothing), "orpo": lambda o: ORPOLoss(o.beta),
               "cpo": lambda o: CPOLoss(o.beta, o.alpha, o.label_smoothing)}[name](cfg.objective)
    expected, _ = loss_fn(logps, CTX)
    assert loss == pytest.approx(expected.item(), rel=1e-4, abs=1e-5)


@pytest.fixture
def no_reference_loaded(monkeypatch):
    """Fail if a reference copy is made or loaded; record each trainer's reference model."""
    import trl.trainer.dpo_trainer as dpo_module

    import align_train.train as train

    def refuse(*args, **kwargs):
        raise AssertionError("a reference model was made for a reference-free objective")

    monkeypatch.setattr(train, "frozen_copy", refuse)
    monkeypatch.setattr(dpo_module, "create_model_from_path", refuse)
    seen = []
    init = PairedLossTrainer.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        seen.append(self.ref_model)

    monkeypatch.setattr(PairedLossTrainer, "__init__", recording_init)
    return seen


@pytest.mark.parametrize("name", ["simpo", "orpo", "cpo"])
def test_trains_the_tiny_model_without_a_reference(tmp_path, name, no_reference_loaded):
    result = run_recipe(tmp_path, f"recipe=tiny/{name}", "data.max_eval_rows=24",
                        "train.save_steps=0")
    assert no_reference_loaded == [None]
    assert result.after["preference_accuracy"] >= result.before["preference_accuracy"] + 0.2, (result.before,
                                                                                               result.after)


@pytest.mark.parametrize("tuning", ["lora", "nest"])
@pytest.mark.parametrize("name", ["simpo", "orpo", "cpo"])
def test_composes_with_lora_and_nest(tmp_path, name, tuning, no_reference_loaded):
    extra = ["tuning.r=4", "train.learning_rate=1e-3"] if tuning == "lora" else ["train.learning_rate=1e-2"]
    result = run_recipe(tmp_path, f"recipe=tiny/{name}", f"tuning={tuning}", *extra, "train.max_steps=3",
                        "train.save_steps=0", "eval=none", "data.max_eval_rows=8")
    assert result.tuning == tuning and result.steps == 3 and no_reference_loaded == [None]
    assert math.isfinite(result.train_loss)
