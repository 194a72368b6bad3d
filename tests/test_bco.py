"""BCO: the loss against a hand computation, the reward shift (closed form, across resume), the UDM
density-ratio estimate on known Gaussians, clear errors, and the tiny end-to-end runs."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import multivariate_normal, spearmanr

from align_train.errors import ConfigError, DataError
from align_train.inference import completion_logprobs
from align_train.objectives import udm
from align_train.objectives.bco_loss import STATE_FILE, WEIGHT_COLUMN, RunningMean, bco_loss
from align_train.paths import DATA_DIR
from tests.conftest import FAST, compose_config, run_recipe
from tests.test_losses import pairs, reference_scorer, trainer_loss


def feedback_rows(n_pairs: int) -> list[dict]:
    """Unpaired rows from the first pairs, labels interleaved (the first row desirable)."""
    rows = []
    for i, pair in enumerate(pairs(n_pairs)):
        good = {"prompt": pair["prompt"], "completion": pair["chosen"], "label": True}
        bad = {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False}
        rows += [good, bad] if i % 2 == 0 else [bad, good]
    return rows


# --------------------------------------------------------------------------- the loss


def test_bco_loss_function_matches_the_formula():
    chosen, rejected, delta = torch.tensor([0.3, -1.2]), torch.tensor([0.5, -2.0, 0.1]), 0.25
    weights = torch.tensor([2.0, 0.5, 1.0])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    good = -sum(math.log(sig(r - delta)) for r in (0.3, -1.2)) / 2
    bad = -sum(w * math.log(sig(-(r - delta))) for r, w in zip((0.5, -2.0, 0.1), (2.0, 0.5, 1.0))) / 3
    assert bco_loss(chosen, rejected, delta, weights).item() == pytest.approx(good + bad, rel=1e-6)
    unweighted = -sum(math.log(sig(-(r - delta))) for r in (0.5, -2.0, 0.1)) / 3
    assert bco_loss(chosen, rejected, delta).item() == pytest.approx(good + unweighted, rel=1e-6)
    # a batch holding one kind only: the other mean is absent, not NaN
    assert bco_loss(chosen, torch.tensor([]), delta).item() == pytest.approx(good, rel=1e-6)


def hand_udm_weights(reference, tokenizer, rows: list[dict], c: float, clip=(0.5, 10.0)) -> list[float]:
    """UDM's weights from the formula, without the objective's code: each prompt's mean-pooled last-layer
    state under the reference model, one at a time (no padding); standardised; an L2 logistic regression
    (desirable = 1, intercept unpenalised) fitted by minimising C * sum(log-loss) + |w|^2 / 2 with scipy;
    w(x) = P(desirable | x) / P(undesirable | x) = exp(logit), clipped; desirable rows weigh 1."""
    from scipy.optimize import minimize

    from align_train.inference.prompts import prompt_ids

    def embed(prompt):
        ids = torch.tensor([prompt_ids(tokenizer, prompt)])
        with torch.no_grad():
            return reference(input_ids=ids, output_hidden_states=True).hidden_states[-1][0].mean(0).double().numpy()

    X = np.stack([embed(r["prompt"]) for r in rows])
    y = np.array([1.0 if r["label"] else 0.0 for r in rows])
    assert y.sum() == len(y) - y.sum(), "balanced classes: class_weight plays no part"
    scale = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(scale > 0, scale, 1.0)

    def objective(theta):
        w, b = theta[:-1], theta[-1]
        logit = Z @ w + b
        loss = np.logaddexp(0, logit) - y * logit  # -log-likelihood of each row
        p = 1 / (1 + np.exp(-logit))
        return c * loss.sum() + 0.5 * w @ w, np.r_[c * Z.T @ (p - y) + w, c * (p - y).sum()]

    theta = minimize(objective, np.zeros(Z.shape[1] + 1), jac=True, method="L-BFGS-B",
                     options={"gtol": 1e-10, "maxiter": 10_000}).x
    ratio = np.exp(Z @ theta[:-1] + theta[-1])
    return [1.0 if r["label"] else float(np.clip(q, *clip)) for q, r in zip(ratio, rows)]


@pytest.mark.parametrize("tuning,udm_on", [("full", False), ("lora", False), ("full", True)])
def test_trainer_loss_matches_hand_computation(tmp_path, tuning, udm_on):
    """The whole adapter on one batch: our log-probs, the tuning's reference, the delta of this very batch."""
    beta = 0.4
    no_dropout = ["tuning.dropout=0"] if tuning == "lora" else []  # the batch is scored in training mode
    cfg = compose_config(
        "recipe=tiny/bco", f"tuning={tuning}", *no_dropout, f"objective.beta={beta}", f"objective.udm.enabled={udm_on}", "objective.udm.min_prompts=2",
        "objective.udm.heldout_fraction=0.34", "objective.udm.regularization=1.0",
        "objective.udm.min_ratio=0.001", "objective.udm.max_ratio=1000",  # wide: the ratio itself is compared
        "train.global_batch_size=6", "train.per_device_batch_size=6",
    )
    # One batch holding the whole set (the loss is a mean per kind, so the sampler's order does not matter).
    # Desirable and undesirable rows have different prompts, so UDM weights differ from 1.
    source = pairs(6)
    rows = [{"prompt": p["prompt"], "completion": p["chosen"], "label": True} for p in source[:3]]
    rows += [{"prompt": p["prompt"], "completion": p["rejected"], "label": False} for p in source[3:]]
    loss, model, reference, tokenizer, trainer = trainer_loss(cfg, rows, tmp_path, "feedback", return_trainer=True,
                                                              train_mode=True)

    def logps(m):
        return [s for s, _ in completion_logprobs(m, tokenizer, [(r["prompt"], r["completion"]) for r in rows])]

    rewards = [beta * (p - r) for p, r in zip(logps(model), reference_scorer(model, reference)(logps))]
    delta = sum(rewards) / len(rewards)  # the first batch: the running mean is this batch's mean
    weights = [1.0] * len(rows)
    if udm_on:  # the trainer's column holds the hand weights, on the right rows
        hand = hand_udm_weights(reference, tokenizer, rows, c=1.0, clip=(1e-3, 1e3))
        undesirable = [w for w, r in zip(hand, rows) if not r["label"]]
        assert all(1e-3 < w < 1e3 and abs(w - 1.0) > 1e-2 for w in undesirable), undesirable
        # 1%: sklearn's L-BFGS stops at its tolerance (1e-4) short of the optimum (measured 0.3% off)
        weights = trainer.train_dataset[WEIGHT_COLUMN]
        assert weights == pytest.approx(hand, rel=1e-2)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    good = [-math.log(sig(x - delta)) for x, r in zip(rewards, rows) if r["label"]]
    bad = [-w * math.log(sig(-(x - delta))) for x, w, r in zip(rewards, weights, rows) if not r["label"]]
    expected = sum(good) / len(good) + sum(bad) / len(bad)
    assert abs(delta) > 1e-3, "the perturbation must move the policy off its reference"
    assert loss == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert trainer.loss_fn.reward_shift.mean == pytest.approx(delta, rel=1e-4, abs=1e-6)


# --------------------------------------------------------------------------- the reward shift


def test_running_mean_equals_the_closed_form_over_batches():
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, generator=generator) * 3 + 1 for n in (5, 1, 8, 3)]
    running = RunningMean()
    for i, batch in enumerate(batches):
        running.update(batch)
        seen = torch.cat(batches[: i + 1])
        assert running.mean == pytest.approx(seen.double().mean().item(), rel=1e-12)
    restored = RunningMean()
    restored.load_state_dict(json.loads(json.dumps(running.state_dict())))
    more = torch.tensor([10.0, -4.0])
    assert restored.update(more) == pytest.approx(torch.cat([*batches, more]).double().mean().item(), rel=1e-12)


def test_delta_is_logged_saved_in_checkpoints_and_survives_resume(tmp_path):
    """A run killed after its checkpoint at step 4 and resumed ends like an uninterrupted one, delta included."""
    common = ["recipe=tiny/bco", "objective.udm.enabled=false", "train.max_steps=8", "train.save_steps=4",
              "train.save_total_limit=null", "eval=none", "data.max_eval_rows=8"]
    whole = tmp_path / "whole"
    run_recipe(whole, *common)
    logged = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    deltas = [entry["bco/delta"] for entry in logged if "bco/delta" in entry and "loss" in entry]
    assert len(deltas) >= 2 and len(set(deltas)) > 1

    state_4 = json.loads((whole / "checkpoint-4" / STATE_FILE).read_text())
    state_8 = json.loads((whole / "checkpoint-8" / STATE_FILE).read_text())
    assert state_4["count"] == 4 * 16 and state_8["count"] == 8 * 16  # every reward of both kinds, once
    assert state_4["delta"] != state_8["delta"]

    # The "interrupted" run: only the uninterrupted run's checkpoint-4 survives; resume continues from it.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-4", resumed / "checkpoint-4")
    run_recipe(resumed, *common, "resume=true")
    assert json.loads((resumed / "checkpoint-8" / STATE_FILE).read_text())["delta"] == pytest.approx(
        state_8["delta"], rel=1e-6)
    a, b = load_file(whole / "final" / "model.safetensors"), load_file(resumed / "final" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


# --------------------------------------------------------------------------- underlying-distribution matching


def two_gaussians(n: int, seed: int):
    """n desirable prompts from N(0, I) and n undesirable from N(0.6, I) in 4-d, probe points around the
    undesirable ones (where weights are used), and the true ratio there. The true log-ratio is linear
    in x, so a logistic regression is the right model: what it gets wrong is estimation, not form."""
    rng = np.random.default_rng(seed)
    mean_d, mean_u = np.zeros(4), np.full(4, 0.6)
    desirable, undesirable = rng.normal(mean_d, 1.0, size=(n, 4)), rng.normal(mean_u, 1.0, size=(n, 4))
    probe = rng.normal(mean_u, 1.3, size=(400, 4))
    true = multivariate_normal(mean_d).pdf(probe) / multivariate_normal(mean_u).pdf(probe)
    return desirable, undesirable, probe, true


def log_ratio_fit(estimated: np.ndarray, true: np.ndarray) -> dict:
    """How an estimate's log-ratio relates to the true one: median |error|, mean error (bias), and the
    slope of log(estimated) on log(true) (1: calibrated; below 1: shrunk towards weight 1)."""
    error = np.log(estimated) - np.log(true)
    return {"median_abs": float(np.median(np.abs(error))), "bias": float(error.mean()),
            "slope": float(np.polyfit(np.log(true), np.log(estimated), 1)[0])}


def assert_calibrated(estimated: np.ndarray, true: np.ndarray) -> None:
    """Values, not only order: at C = 1 and 1,500 prompts a kind, the fit's median |log error| measured
    0.03-0.08, its bias within 0.05 and its slope 0.98-1.01 over 5 seeds; a ratio off by a factor k has
    |bias| = |log k| (3x: 1.10)."""
    fit = log_ratio_fit(estimated, true)
    assert spearmanr(estimated, true).statistic > 0.9, fit
    assert fit["median_abs"] < 0.15 and abs(fit["bias"]) < 0.15 and 0.9 < fit["slope"] < 1.1, fit


def test_udm_weights_equal_the_true_density_ratio_of_two_gaussians():
    desirable, undesirable, probe, true = two_gaussians(1500, seed=0)
    ratio = udm.fit_density_ratio(desirable, undesirable, regularization=1.0, seed=0)
    estimated = ratio(probe)
    assert_calibrated(estimated, true)
    assert 0.6 < ratio.heldout_accuracy < 0.85  # distributions that differ, but overlap

    weights, stats = udm.clipped_weights(estimated, 0.5, 10.0)
    assert weights.min() >= 0.5 and weights.max() <= 10.0
    assert stats["clipped_low"] > 0 and stats["clipped_high"] > 0  # the probe spans both clip bounds
    assert np.array_equal(weights[(estimated > 0.5) & (estimated < 10)],
                          estimated[(estimated > 0.5) & (estimated < 10)])


def test_a_ratio_three_times_too_large_fails_the_calibration_check():
    """The check above guards values: a classifier whose ratio is 3x the truth ranks perfectly and fails."""
    desirable, undesirable, probe, true = two_gaussians(1500, seed=0)
    ratio = udm.fit_density_ratio(desirable, undesirable, regularization=1.0, seed=0)
    tripled = 3 * ratio(probe)
    assert spearmanr(tripled, true).statistic > 0.9  # rank correlation alone would pass it
    with pytest.raises(AssertionError):
        assert_calibrated(tripled, true)
    with pytest.raises(AssertionError):  # and so does the inverse ratio p_undesirable / p_desirable
        assert_calibrated(1 / ratio(probe), true)


def test_the_default_regularization_shrinks_log_weights_towards_zero_less_with_more_prompts():
    """C = 0.01 (the default, on standardised embeddings) scales the fitted log-ratio by a factor below 1
    that grows with the number of prompts: the L2 penalty |w|^2 / 2C is fixed while the log-loss sums
    over every prompt. Measured over 5 seeds: slope 0.80-0.82 at 1,500 prompts a kind, 0.43-0.46 at 200
    (C = 1: 0.98-1.01 and 1.07-1.10). docs/objectives.md quotes these figures."""
    import inspect

    from align_train.config import UDMConfig

    default = UDMConfig().regularization
    assert default == 0.01 == inspect.signature(udm.fit_density_ratio).parameters["regularization"].default
    slopes = {}
    for n in (1500, 200):
        desirable, undesirable, probe, true = two_gaussians(n, seed=0)
        fit = log_ratio_fit(udm.fit_density_ratio(desirable, undesirable, seed=0)(probe), true)
        slopes[n] = fit["slope"]
        assert abs(fit["bias"]) < 0.5, fit  # shrunk towards the intercept, not shifted
    assert 0.7 < slopes[1500] < 0.9 and 0.3 < slopes[200] < 0.6, slopes
    with pytest.raises(AssertionError):  # the shrinkage is visible to the calibration check
        desirable, undesirable, probe, true = two_gaussians(1500, seed=0)
        assert_calibrated(udm.fit_density_ratio(desirable, undesirable, seed=0)(probe), true)


def test_udm_on_identical_distributions_reports_chance():
    rng = np.random.default_rng(1)
    same = udm.fit_density_ratio(rng.normal(size=(600, 4)), rng.normal(size=(600, 4)), seed=0)
    assert abs(same.heldout_accuracy - 0.5) < 0.1
    assert np.allclose(same(rng.normal(size=(50, 4))), 1.0, atol=0.3)


def test_udm_with_a_separate_embedding_model_from_a_local_directory(tmp_path):
    """The encoder path (here the tiny model's directory loaded as a bare encoder) gives weights too."""
    result = run_recipe(tmp_path, "recipe=tiny/bco", *FAST, "objective.udm.enabled=true",
                        f"objective.udm.embedding_model={DATA_DIR / 'tiny-llama'}")
    report = json.loads((tmp_path / "bco_udm.json").read_text())
    assert report["embeddings"].endswith("tiny-llama") and result.steps == 4
    assert 0.0 <= report["classifier_balanced_accuracy"] <= 1.0


# --------------------------------------------------------------------------- errors


def test_one_label_only_is_a_clear_error(tmp_path):
    path = tmp_path / "all_good.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in feedback_rows(20) if r["label"]))
    with pytest.raises(DataError, match=r"both desirable.*\d+ desirable and 0 undesirable"):
        run_recipe(tmp_path / "run", "recipe=tiny/bco", f"data.train.tiny_preference.path={path}",
                   "data.train.tiny_preference.format=feedback")


def test_non_boolean_label_names_the_row(tmp_path):
    rows = feedback_rows(4)
    rows[5]["label"] = "yes"
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"line 6.*'label' is 'yes'"):
        run_recipe(tmp_path / "run", "recipe=tiny/bco", f"data.train.tiny_preference.path={path}",
                   "data.train.tiny_preference.format=feedback", "model.name_or_path=/nonexistent")


def test_udm_with_too_few_prompts_of_a_kind_is_a_clear_error(tmp_path):
    rows = feedback_rows(30)
    rows = [r for r in rows if r["label"]] + [r for r in rows if not r["label"]][:3]
    path = tmp_path / "few_bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"3 distinct undesirable prompt\(s\).*objective\.udm\.min_prompts=8"):
        run_recipe(tmp_path / "run", "recipe=tiny/bco", "objective.udm.enabled=true",
                   f"data.train.tiny_preference.path={path}",
                   "data.train.tiny_preference.format=feedback", "data.eval_fraction=0")


@pytest.mark.parametrize("override,text", [
    ("objective.udm.min_ratio=0", "objective.udm.min_ratio"),
    ("objective.udm.max_ratio=0.1", "objective.udm.min_ratio"),
    ("objective.udm.heldout_fraction=1.0", "objective.udm.heldout_fraction"),
    ("objective.beta=0", "objective.beta"),
])
def test_bad_bco_settings_fail_before_loading(tmp_path, override, text):
    with pytest.raises(ConfigError, match=text.replace(".", r"\.")):
        run_recipe(tmp_path, "recipe=tiny/bco", override, "model.name_or_path=/nonexistent")


# --------------------------------------------------------------------------- end to end


def test_bco_raises_heldout_preference_accuracy(tmp_path):
    result = run_recipe(tmp_path, "recipe=tiny/bco", "objective.udm.enabled=false")
    assert result.after["preference_accuracy"] >= result.before["preference_accuracy"] + 0.2
    assert result.after["reward_accuracy"] >= 0.9


UDM_SEEDS = (2, 3, 4)  # order of the training rows for each pair of runs (BCO reads them in order: see data.seed)
# Measured margin ratios, UDM on / off, for the 3 orders: benign 1.100 / 1.164 / 1.102, harmful 0.700 / 0.572 /
# 0.769 (an earlier version of the training head gave 1.145 / 1.153 / 1.165 and 0.551 / 0.742 / 0.721: the
# spread between versions is as large as between orders). The claim each order must meet: the benign margin
# grows by more than 5% and the harmful one shrinks by more than 10%.
BENIGN_GAIN = 1.05  # UDM's benign margin over the plain run's, at least
HARMFUL_LOSS = 0.90  # UDM's harmful margin over the plain run's, at most


def test_udm_moves_the_margin_towards_the_starved_slice_for_every_seed(tmp_path):
    """With few undesirable answers to benign prompts, UDM up-weights them (~3) and down-weights the harmful
    ones (~0.6): on held-out pairs the implicit-reward margin grows on the benign / borderline slice and
    shrinks on the harmful one, against the same run without UDM, for each of 3 orders of the training rows
    (``scripts/udm_shift.py --seeds 2 3 4`` prints the same runs; docs/objectives.md quotes it)."""
    from scripts.udm_shift import overrides, reward_metrics, shifted_feedback

    margins = {}
    for seed in UDM_SEEDS:
        paths = shifted_feedback(tmp_path / f"data-{seed}", seed)
        for udm_on in (False, True):
            result = run_recipe(tmp_path / f"seed{seed}-{udm_on}", *overrides(paths, udm_on))
            metrics = reward_metrics(result.final_dir, paths)
            assert metrics["benign"]["reward_accuracy"] >= 0.95, (seed, udm_on, metrics)
            margins[seed, udm_on] = {name: m["reward_margin"] for name, m in metrics.items()}
    ratios = {seed: {name: margins[seed, True][name] / margins[seed, False][name] for name in ("benign", "harmful")}
              for seed in UDM_SEEDS}
    print(f"\n[udm margins] {margins}\n[udm ratios on / off] {ratios}")
    report = json.loads((tmp_path / f"seed{UDM_SEEDS[0]}-True" / "bco_udm.json").read_text())
    assert report["classifier_balanced_accuracy"] > 0.6  # the shift is visible in the prompts
    for seed, ratio in ratios.items():
        assert ratio["benign"] > BENIGN_GAIN and ratio["harmful"] < HARMFUL_LOSS, (seed, ratios)
