"""BCO: binary thumbs-up / thumbs-down feedback, with reward shift and underlying-distribution matching.

Unpaired like KTO, and preference pairs are accepted through the same conversion (chosen =
desirable, rejected = undesirable). The loss is ``bco_loss.BCOLoss`` on the unpaired custom-loss
path; this adapter validates the settings and the data, and, with ``objective.udm.enabled``,
fits the density-ratio classifier on the training prompts before training and attaches each
row's weight (``udm.py``). The prompt embeddings come from the model before its first step (the
reference model) unless ``objective.udm.embedding_model`` names a separate encoder.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
from trl import KTOConfig

from align_train.data import DataBundle
from align_train.distributed import process_state
from align_train.errors import ConfigError
from align_train.objectives import udm
from align_train.objectives.base import ReferenceObjective, label_counts
from align_train.objectives.bco_loss import WEIGHT_COLUMN, BCOLoss
from align_train.objectives.losses import UnpairedLossTrainer
from align_train.run_dir import write_json

REPORT_FILE = "bco_udm.json"


class BCOObjective(ReferenceObjective):
    name = "bco"
    accepts = ("feedback",)
    config_class = KTOConfig  # BCO runs on KTO's unpaired data path (see losses.UnpairedLossTrainer)
    trainer_class = UnpairedLossTrainer

    def validate(self, run_cfg) -> None:
        super().validate(run_cfg)
        u = self.cfg.udm  # checked even while off, so that turning it on never meets a bad value late
        if not 0 < u.min_ratio <= u.max_ratio:
            raise ConfigError(
                f"objective.udm.min_ratio ({u.min_ratio}) and max_ratio ({u.max_ratio}) must satisfy 0 < min <= max"
            )
        if not 0 < u.heldout_fraction < 1:
            raise ConfigError(f"objective.udm.heldout_fraction must be in (0, 1), got {u.heldout_fraction}")
        if u.min_prompts < 2 or u.max_prompts < u.min_prompts:
            raise ConfigError(
                f"objective.udm.max_prompts ({u.max_prompts}) must be >= min_prompts ({u.min_prompts}) >= 2"
            )
        if u.regularization <= 0:
            raise ConfigError(f"objective.udm.regularization (inverse L2 strength C) must be > 0, got {u.regularization}")

    def check_data(self, data: DataBundle, tokenizer) -> list[str]:
        warnings = super().check_data(data, tokenizer)
        # Labels are booleans already: the data layer rejects any other value, naming the file and line.
        label_counts(data, "BCO", " (its loss is a binary classifier between them)")
        labels = data.train["label"]
        if self.cfg.udm.enabled:  # before the model loads: enough distinct prompts of each kind to fit on
            for label, kind in ((True, "desirable"), (False, "undesirable")):
                distinct = {udm.prompt_key(p) for p, lab in zip(data.train["prompt"], labels) if lab == label}
                udm.check_enough_prompts(kind, len(distinct), self.cfg.udm.min_prompts)
        return warnings

    def trl_kwargs(self, data: DataBundle) -> dict:
        # KTO's data path without the mismatched KL batch
        return {**self.passthrough_kwargs(), "loss_type": "apo_zero_unpaired"}

    def prepare(self, model, tokenizer, data: DataBundle, run_dir) -> DataBundle:
        """With UDM on: every row's weight, from prompts embedded by the model before its first step."""
        if not self.cfg.udm.enabled:
            return data
        return self.with_udm_weights(model, tokenizer, data, run_dir)

    def trainer_init_kwargs(self, data: DataBundle) -> dict:
        loss = BCOLoss(self.cfg.beta)
        if "udm" in data.report:
            loss.udm_accuracy = data.report["udm"]["classifier_balanced_accuracy"]
        return {"loss": loss}

    # ----------------------------------------------------------------- underlying-distribution matching

    def with_udm_weights(self, model, tokenizer, data: DataBundle, run_dir) -> DataBundle:
        """The data with a ``udm_weight`` column: the clipped density ratio for undesirable rows, 1 otherwise."""
        u = self.cfg.udm
        prompts: dict[bool, dict[str, object]] = {True: {}, False: {}}  # key -> prompt, per label
        for prompt, label in zip(data.train["prompt"], data.train["label"]):
            prompts[label].setdefault(udm.prompt_key(prompt), prompt)
        rng = random.Random(u.seed)
        sample = {label: rng.sample(sorted(by_key), min(u.max_prompts, len(by_key)))
                  for label, by_key in prompts.items()}
        if u.embedding_model:
            encoder, encoder_tokenizer = udm.load_embedding_model(u.embedding_model)
            chat = False
        else:  # the model before its first step is the reference model
            encoder, encoder_tokenizer, chat = model, tokenizer, True
        values = {**prompts[True], **prompts[False]}
        embedded: dict[str, np.ndarray] = {}  # the fit sample's undesirable prompts are weighted too: embed once

        def embed(keys: list[str]) -> np.ndarray:
            new = [k for k in dict.fromkeys(keys) if k not in embedded]
            if new:
                vectors = udm.embed_prompts(encoder, encoder_tokenizer, [values[k] for k in new], u.batch_size,
                                            use_chat_template=chat)
                embedded.update(zip(new, vectors))
            return np.stack([embedded[k] for k in keys])

        ratio = udm.fit_density_ratio(embed(sample[True]), embed(sample[False]), u.heldout_fraction,
                                      u.regularization, u.seed, u.min_prompts)

        def weights_for(dataset):
            keys = [udm.prompt_key(p) for p in dataset["prompt"]]
            for key, prompt in zip(keys, dataset["prompt"]):
                values.setdefault(key, prompt)
            undesirable = sorted({k for k, label in zip(keys, dataset["label"]) if not label})
            raw = dict(zip(undesirable, ratio(embed(undesirable)))) if undesirable else {}
            clipped, stats = udm.clipped_weights(np.array(list(raw.values()) or [1.0]), u.min_ratio, u.max_ratio)
            by_prompt = dict(zip(raw, clipped))
            column = [1.0 if label else float(by_prompt[k]) for k, label in zip(keys, dataset["label"])]
            return dataset.add_column(WEIGHT_COLUMN, column), stats

        train, stats = weights_for(data.train)
        evaluation = weights_for(data.eval)[0] if data.eval is not None else None
        report = {
            "classifier_balanced_accuracy": ratio.heldout_accuracy,
            "fitted_on": ratio.fitted_on,
            "embeddings": u.embedding_model or "reference model, mean-pooled last layer",
            "clip": [u.min_ratio, u.max_ratio],
            "undesirable_weights": stats,
        }
        note = (
            " (at or near chance: the desirable and undesirable prompt distributions barely differ; weights stay near 1)"
            if ratio.heldout_accuracy < udm.INDISTINGUISHABLE_ACCURACY else ""
        )
        if process_state().is_main_process and run_dir is not None:
            write_json(Path(run_dir) / REPORT_FILE, report)
            print(
                f"[align-train] bco udm: prompt classifier held-out balanced accuracy {ratio.heldout_accuracy:.3f}{note}; "
                f"undesirable weights mean {stats['mean']:.3f}, range [{stats['min']:.3f}, {stats['max']:.3f}], "
                f"clipped {stats['clipped_low']:.1%} low / {stats['clipped_high']:.1%} high (see {REPORT_FILE})",
                file=sys.stderr, flush=True,
            )
        return DataBundle(format=data.format, train=train, eval=evaluation, heldout=data.heldout,
                          report={**data.report, "udm": report})
