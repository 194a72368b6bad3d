"""The evaluation suites: each scores one aspect of a model and returns its headline metrics.

| suite               | headline keys                                              |
| ------------------- | ---------------------------------------------------------- |
| `refusal`           | refusal_rate (refusals + partial), attack_success_rate     |
| `over_refusal`      | over_refusal_rate (refusals of safe prompts)               |
| `preference`        | preference_accuracy (log-prob), reward_accuracy (vs start) |
| `perplexity`        | perplexity (held-out completions)                          |
| `latent_separation` | latent_separation (0-1 index of the best single layer),     |
|                     | latent_separation_pooled (AQI paper's layer-pooled index)  |
| `latent_robustness` | masr (max over layers of the latent attack's success rate) |
| `branching_factor`  | branching_factor (exp of the mean next-token entropy)      |

Suites read what they need from an ``EvalContext`` (prompts, held-out rows, the judge, the
starting model's preference scores) so that each input is loaded once per run, not per checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from align_train.errors import ConfigError

from align_train.inference import generate
from align_train.evaluation.metrics import (
    perplexity,
    preference_metrics,
    preference_scores,
    prompt_completion_pairs,
)


@dataclass
class SuiteResult:
    metrics: dict[str, float]
    details: dict = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    scores: list | None = None  # per-example scores, kept in memory only (the starting model's become the reference)


class Suite:
    """One aspect of a model, scored. Its settings are the field ``name`` of ``eval`` in the schema."""

    name = ""
    headline: tuple[str, ...] = ()  # the metrics tables, plots and the run summary show

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def check(cls, cfg, key: str) -> None:
        """Config checks that need nothing loaded (``key`` is the suite's config key, for messages)."""

    def prepare(self, ctx) -> None:
        """Load inputs (prompts, rows) once, before any model is scored; errors surface here."""

    def check_model(self, model, key: str) -> None:
        """Checks against the loaded model (layer indices), run before any suite generates."""

    def run(self, model, tokenizer, ctx) -> SuiteResult:
        raise NotImplementedError


GENERATION_BACKENDS = ("transformers", "vllm")


class RefusalSuite(Suite):
    """Answers to harmful prompts, judged: the share refused, and the attack success rate."""

    name = "refusal"
    headline = ("refusal_rate", "attack_success_rate")

    @classmethod
    def check(cls, cfg, key: str) -> None:
        from align_train.evaluation.judges import JUDGES

        if cfg.judge.name not in JUDGES:
            raise ConfigError(f"{key}.judge.name is '{cfg.judge.name}'; expected one of {', '.join(JUDGES)}")
        if cfg.generation.backend not in GENERATION_BACKENDS:
            raise ConfigError(f"{key}.generation.backend is '{cfg.generation.backend}'; expected one of "
                              f"{', '.join(GENERATION_BACKENDS)}")
        if cfg.generation.backend == "vllm":
            from align_train.inference.vllm_backend import vllm_unavailable

            reason = vllm_unavailable()
            if reason:
                raise ConfigError(f"{key}.generation.backend=vllm cannot run: {reason}; use the default "
                                  "'transformers'")

    def prepare(self, ctx) -> None:
        self.prompts = ctx.prompts(f"eval.{self.name}.prompts", self.cfg.prompts)
        self.judge = ctx.judge(self.cfg.judge)

    def judged(self, model, tokenizer, ctx) -> tuple[float, dict, list[dict]]:
        """(refusal rate, details, samples): each response labelled compliance / refusal / partial by the judge."""
        responses = generate(model, tokenizer, self.prompts, self.cfg.generation)
        unparsed_before = getattr(self.judge, "unparsed", 0)
        labels = self.judge.labels(self.prompts, responses)
        rate = sum(label != "compliance" for label in labels) / len(labels)
        details = {"prompts": len(self.prompts), "judge": self.judge.identity,
                   "labels": {name: labels.count(name) for name in ("compliance", "partial", "refusal")}}
        if hasattr(self.judge, "unparsed"):  # answers the judge model gave outside its format
            details["unparsed_judgements"] = self.judge.unparsed - unparsed_before
        samples = [
            {"prompt": p, "response": r, "label": label, "refusal": label != "compliance"}
            for p, r, label in list(zip(self.prompts, responses, labels))[: ctx.samples]
        ]
        return rate, details, samples

    def run(self, model, tokenizer, ctx) -> SuiteResult:
        rate, details, samples = self.judged(model, tokenizer, ctx)
        return SuiteResult({"refusal_rate": rate, "attack_success_rate": 1.0 - rate}, details, samples)


class OverRefusalSuite(RefusalSuite):
    """Answers to safe prompts that look unsafe: the share wrongly refused (a partial refusal included)."""

    name = "over_refusal"
    headline = ("over_refusal_rate",)

    def run(self, model, tokenizer, ctx) -> SuiteResult:
        rate, details, samples = self.judged(model, tokenizer, ctx)
        return SuiteResult({"over_refusal_rate": rate}, details, samples)


class PreferenceSuite(Suite):
    """Held-out pairs: log-prob accuracy; with the starting model's scores, DPO's implicit-reward accuracy."""

    name = "preference"
    headline = ("preference_accuracy", "reward_accuracy", "logprob_margin", "reward_margin")

    def prepare(self, ctx) -> None:
        self.rows = ctx.heldout_rows("eval.preference", self.cfg, "preference")

    def run(self, model, tokenizer, ctx) -> SuiteResult:
        scores = preference_scores(model, tokenizer, self.rows, batch_size=self.cfg.batch_size,
                                   max_length=ctx.max_length)
        # The starting model is the reference: its implicit rewards are zero by definition, not measured.
        reference = None if ctx.scoring_reference else ctx.reference_preference_scores(self.rows)
        metrics = preference_metrics(scores, reference)
        details = {"pairs": len(self.rows), "reference": reference is not None}
        return SuiteResult(metrics, details, scores=scores)


class PerplexitySuite(Suite):
    """Perplexity of held-out completions: a proxy for retained ability."""

    name = "perplexity"
    headline = ("perplexity",)

    def prepare(self, ctx) -> None:
        fmt, rows = ctx.heldout_any("eval.perplexity", self.cfg)
        self.pairs = prompt_completion_pairs(fmt, rows)

    def run(self, model, tokenizer, ctx) -> SuiteResult:
        value = perplexity(model, tokenizer, self.pairs, batch_size=self.cfg.batch_size, max_length=ctx.max_length)
        return SuiteResult({"perplexity": value}, {"examples": len(self.pairs)})


class LatentSeparationSuite(Suite):
    """How well safe and unsafe prompts separate in the hidden states: per layer, at the best single layer
    (``latent_separation``, an in-sample maximum over layers) and layer-pooled as in the AQI paper
    (``latent_separation_pooled``, layer weights cross-fitted)."""

    name = "latent_separation"
    headline = ("latent_separation", "latent_separation_pooled")

    @classmethod
    def check(cls, cfg, key: str) -> None:
        from align_train.inference.activations import HIDDEN_POOLINGS

        if cfg.pooling not in HIDDEN_POOLINGS:
            raise ConfigError(f"{key}.pooling is '{cfg.pooling}'; expected one of {', '.join(HIDDEN_POOLINGS)}")
        if cfg.layers is not None and any(layer < 1 for layer in cfg.layers):
            raise ConfigError(f"{key}.layers: block indices start at 1, got {list(cfg.layers)}")

    def prepare(self, ctx) -> None:
        self.safe = ctx.prompts("eval.latent_separation.safe", self.cfg.safe)
        self.unsafe = ctx.prompts("eval.latent_separation.unsafe", self.cfg.unsafe)

    def run(self, model, tokenizer, ctx) -> SuiteResult:
        from align_train.evaluation.separation import latent_separation

        layers = list(self.cfg.layers) if self.cfg.layers else None
        result = latent_separation(model, tokenizer, self.safe, self.unsafe, layers=layers, pooling=self.cfg.pooling,
                                   batch_size=self.cfg.batch_size, lam=self.cfg.lam, seed=ctx.cfg.seed)
        pooled = result["pooled"]
        details = {
            "best_layer": result["best_layer"],
            "per_layer": {str(k): v for k, v in result["per_layer"].items()},
            "pooled": {**{k: v for k, v in pooled.items() if k not in ("weights", "fold_weights")},
                       "weights": {str(k): v for k, v in pooled["weights"].items()}},
            "safe_prompts": len(self.safe),
            "unsafe_prompts": len(self.unsafe),
        }
        return SuiteResult({"latent_separation": result["latent_separation"],
                            "latent_separation_pooled": result["latent_separation_pooled"]}, details)


class LatentRobustnessSuite(Suite):
    """The latent activation steering attack per layer (ASR, MASR) and its NLL probe, judged on harmful prompts."""

    name = "latent_robustness"
    headline = ("masr",)

    @classmethod
    def check(cls, cfg, key: str) -> None:
        RefusalSuite.check(cfg, key)
        if cfg.layers is not None and any(layer < 1 for layer in cfg.layers):
            raise ConfigError(f"{key}.layers: block indices start at 1, got {list(cfg.layers)}")

    def prepare(self, ctx) -> None:
        self.prompts = ctx.prompts(f"eval.{self.name}.prompts", self.cfg.prompts)
        self.judge = ctx.judge(self.cfg.judge)

    def check_model(self, model, key: str) -> None:
        from align_train.inference.perturbation import check_layers, decoder_blocks

        try:
            decoder_blocks(model)
        except ValueError:  # not a transformer: the suite itself fails, and is recorded
            return
        if self.cfg.layers:
            try:
                check_layers(model, list(self.cfg.layers), f"{key}.layers")
            except ValueError as err:
                raise ConfigError(str(err)) from None

    def run(self, model, tokenizer, ctx) -> SuiteResult:
        from align_train.evaluation.latent_robustness import latent_robustness

        layers = list(self.cfg.layers) if self.cfg.layers else None
        result = latent_robustness(model, tokenizer, self.prompts, self.judge, self.cfg.generation, layers=layers,
                                   scale=self.cfg.scale, seed=self.cfg.seed, batch_size=self.cfg.batch_size)
        details = {
            "prompts": len(self.prompts), "judge": self.judge.identity, "seed": self.cfg.seed,
            "scale": self.cfg.scale, "masr_layer": result["masr_layer"],
            "asr_unperturbed": result["asr_unperturbed"],
            "per_layer": {str(k): v for k, v in result["per_layer"].items()},
        }
        samples = [
            {"prompt": p, "response": r, "perturbed_response": pr, "perturbed_label": label,
             "layer": result["masr_layer"]}
            for p, r, (pr, label) in list(zip(self.prompts, result["responses"], result["perturbed"]))[: ctx.samples]
        ]
        metrics = {"masr": result["masr"], "latent_nll_shift": result["nll_shift_max"]}
        return SuiteResult(metrics, details, samples)


class BranchingFactorSuite(Suite):
    """The branching factor along the model's own answers to a fixed prompt set."""

    name = "branching_factor"
    headline = ("branching_factor",)

    def prepare(self, ctx) -> None:
        self.prompts = ctx.prompts(f"eval.{self.name}.prompts", self.cfg.prompts)

    def run(self, model, tokenizer, ctx) -> SuiteResult:
        from align_train.evaluation.branching import branching_factor

        result = branching_factor(model, tokenizer, self.prompts, self.cfg.generation)
        details = {"prompts": len(self.prompts), "tokens": result["tokens"], "mean_entropy": result["mean_entropy"]}
        samples = [{"prompt": p, "response": r} for p, r in list(zip(self.prompts, result["responses"]))[: ctx.samples]]
        return SuiteResult({"branching_factor": result["branching_factor"]}, details, samples)


# The one registry: a suite is its class here and its settings (``eval.<name>``) in the schema.
SUITES: dict[str, type[Suite]] = {suite.name: suite for suite in (
    RefusalSuite, OverRefusalSuite, PreferenceSuite, PerplexitySuite, LatentSeparationSuite, LatentRobustnessSuite,
    BranchingFactorSuite)}
HEADLINE = tuple(key for suite in SUITES.values() for key in suite.headline)
