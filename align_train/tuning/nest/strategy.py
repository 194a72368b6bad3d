"""NeST as a tuning strategy: probe, select, cluster, parametrise, train (any objective), fold and save.

The strategy never looks at the objective: it hands the trainer a plain transformers model
whose only trainable tensors are the cluster vectors. Preference objectives get a frozen copy
of the starting model as their reference (``provides_reference`` is false), as under ``full``.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from torch import nn

from align_train import console
from align_train.data.prompts import load_prompts
from align_train.distributed import process_state
from align_train.errors import ConfigError
from align_train.run_dir import RunDir, checkpoints
from align_train.tuning.base import TuningStrategy
from align_train.tuning.nest.artifact import (
    ADAPTER_FILE,
    SELECTION_FILE,
    cached_settings,
    load_selection,
    save_adapter,
    save_selection,
)
from align_train.tuning.nest.parametrize import (
    KINDS,
    add_deltas,
    checkpoint_keys,
    deltas_of,
    fold,
    fold_state_dict,
    is_parametrised_state,
    projection,
)
from align_train.tuning.nest.probe import mlp_blocks, pooled_activations
from align_train.tuning.nest.select import LayerSelection, select_layers


SELECTIONS = ("probe", "random")


def log(message: str) -> None:
    console.log(message, topic="nest")


def probe_and_select(model: nn.Module, tokenizer, cfg) -> list[LayerSelection]:
    """Steps 1-3 of NeST on the frozen model: pooled activations, probe, threshold, k-means."""
    harmful = load_prompts("tuning.harmful", cfg.harmful, cfg.seed)
    harmless = load_prompts("tuning.harmless", cfg.harmless, cfg.seed)
    modules = [name for name, _ in mlp_blocks(model)]
    acts_h = pooled_activations(model, tokenizer, harmful, cfg.probe_batch_size, cfg.probe_max_length)
    acts_s = pooled_activations(model, tokenizer, harmless, cfg.probe_batch_size, cfg.probe_max_length)
    log(f"probed {len(modules)} MLP blocks on {len(harmful)} harmful / {len(harmless)} harmless prompts")
    return select_layers(modules, acts_h, acts_s, cfg)


class NestTuning(TuningStrategy):
    name = "nest"
    provides_reference = False
    # One shared vector per cluster of neurons: a few thousand parameters, large steps.
    train_defaults = {"learning_rate": 1e-2}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.selection: list[LayerSelection] | None = None

    def check_launch(self, launch) -> None:
        if launch.kind == "fsdp" and launch.fsdp.get("cpu_ram_efficient_loading"):
            raise ConfigError(
                f"tuning=nest cannot start under FSDP with cpu_ram_efficient_loading ({launch.source}): the selected "
                "neurons are buffers of the parametrised layers, and accelerate's load-on-one-process-then-broadcast "
                "carries only sharded parameters. Add --fsdp_cpu_ram_efficient_loading false to accelerate launch "
                "(each process then loads the model itself)"
            )

    def validate(self) -> None:
        cfg = self.cfg
        if cfg.threshold <= 0:
            raise ConfigError(f"tuning.threshold must be > 0 (a |z-score| cut-off, e.g. 2.0), got {cfg.threshold}")
        if cfg.selection not in SELECTIONS:
            raise ConfigError(f"tuning.selection is '{cfg.selection}'; expected one of {', '.join(SELECTIONS)}")
        if cfg.clusters < 1:
            raise ConfigError(f"tuning.clusters must be >= 1 (k-means clusters per layer), got {cfg.clusters}")
        if cfg.max_neurons_per_layer is not None and cfg.max_neurons_per_layer < 1:
            raise ConfigError(f"tuning.max_neurons_per_layer must be >= 1 or null, got {cfg.max_neurons_per_layer}")
        if not cfg.weights:
            raise ConfigError(f"tuning.weights: name at least one of {', '.join(KINDS)}")
        for i, kind in enumerate(cfg.weights):
            if kind not in KINDS:
                raise ConfigError(f"tuning.weights[{i}] is '{kind}'; expected one of {', '.join(KINDS)}")
        if len(set(cfg.weights)) != len(cfg.weights):
            raise ConfigError(f"tuning.weights lists a kind twice: {list(cfg.weights)}")
        if cfg.probe_c <= 0:
            raise ConfigError(f"tuning.probe_c must be > 0, got {cfg.probe_c}")
        for key in ("probe_batch_size", "probe_max_length"):
            if cfg[key] < 1:
                raise ConfigError(f"tuning.{key} must be >= 1, got {cfg[key]}")
        for key in ("harmful", "harmless"):
            if not cfg[key].path:
                raise ConfigError(f"tuning.{key}.path: NeST needs {key} prompts to probe the model with")
            if cfg[key].max_prompts < 2:
                raise ConfigError(f"tuning.{key}.max_prompts must be >= 2, got {cfg[key].max_prompts}")

    def settings(self, model: nn.Module) -> dict:
        """What the selection depends on; a cached selection made with other settings is not reused."""
        keys = ("harmful", "harmless", "threshold", "max_neurons_per_layer", "selection", "clusters", "probe_c",
                "probe_max_length", "seed")
        cfg = OmegaConf.to_container(self.cfg, resolve=True) if OmegaConf.is_config(self.cfg) else dict(self.cfg)
        return {"model": getattr(model.config, "_name_or_path", None), **{k: cfg[k] for k in keys}}

    def prepare(self, model: nn.Module, tokenizer, run_dir) -> None:
        """Select the neurons: read RUN/nest_selection.safetensors when present, probe otherwise."""
        blocks = mlp_blocks(model)
        for kind in self.cfg.weights:
            if not isinstance(getattr(blocks[0][1], KINDS[kind][0], None), nn.Linear):
                raise ConfigError(f"tuning.weights: '{kind}' needs a linear {KINDS[kind][0]} in the MLP blocks, "
                                  f"which {type(model).__name__} lacks")
        path = RunDir(run_dir).file(SELECTION_FILE)
        settings = self.settings(model)
        before = cached_settings(path)
        if before is not None and before != settings and checkpoints(Path(run_dir)):
            # The run's checkpoints hold vectors for the cached neurons: another selection cannot resume them.
            changed = sorted(k for k in settings if before.get(k) != settings[k])
            keys = ", ".join("model.name_or_path" if k == "model" else f"tuning.{k}" for k in changed)
            raise ConfigError(
                f"{keys}: changed since {run_dir}'s checkpoints were trained on another NeST neuron selection; "
                "resume with the run's own settings (its config.yaml) or start a new output_dir"
            )
        state = process_state()
        with state.main_process_first():  # the main process probes and caches; the others read its cache
            selection = load_selection(path, settings)
            if selection is not None:
                log(f"selection read from {path} (not probing again)")
            else:
                # The model is still where it was loaded (the CPU); the trainer would move it to the
                # accelerator next anyway, and a 7B probe on a CPU takes far too long.
                model.to(state.device)
                selection = probe_and_select(model, tokenizer, self.cfg)
                if state.is_main_process:
                    save_selection(path, selection, settings)
        if not selection:
            raise ConfigError(
                f"tuning.threshold={self.cfg.threshold}: no neuron of any layer passes it; lower it, or give the "
                "probe more prompts (tuning.harmful / tuning.harmless)"
            )
        self.selection = selection

    def apply(self, model: nn.Module) -> nn.Module:
        if self.selection is None:
            raise RuntimeError("NestTuning.apply before prepare: the neurons are not selected yet")
        deltas = add_deltas(model, self.selection, list(self.cfg.weights))
        trainable = sum(d.delta.numel() for d in deltas)
        log(f"{trainable:,} trainable parameters ({len(self.selection)} layers x clusters x hidden x "
            f"{len(self.cfg.weights)} weight kind(s))")
        for layer in self.selection:
            log(f"  {layer.module}: {len(layer.neurons)} neurons in {layer.n_clusters} clusters")
        return model

    def save_final(self, trainer, run_dir) -> str:
        """Fold the cluster vectors into the weights, save a standard checkpoint, and the small adapter."""
        model = trainer.accelerator.unwrap_model(trainer.model)
        kinds = list(self.cfg.weights)
        if getattr(trainer.accelerator.state, "fsdp_plugin", None) is not None:
            return self._save_sharded(trainer, model, run_dir, kinds)
        deltas = {key: d.detach().clone() for key, d in deltas_of(model, self.selection, kinds).items()}
        trainable = sum(d.numel() for d in deltas.values())
        fold(model)
        trainer.save_model(str(run_dir.final))
        info = {"trainable_parameters": trainable, "base_model": getattr(model.config, "_name_or_path", None)}
        if trainer.accelerator.is_main_process:
            info = save_adapter(run_dir.final, self.selection, deltas, kinds, info)
            log(f"adapter {run_dir.final / ADAPTER_FILE}: {info['artifact_bytes']:,} bytes, "
                f"{trainable:,} parameters")
        return f"folded model (safetensors), tokenizer and NeST adapter ({ADAPTER_FILE}, {trainable:,} parameters)"

    def _save_sharded(self, trainer, model, run_dir, kinds) -> str:
        """Under FSDP: the whole state gathered onto the main process and folded there (no process holds it all)."""
        state = trainer.accelerator.get_state_dict(trainer.model)  # every process takes part; the main one gets it
        names = {id(module): name for name, module in model.named_modules()}
        keys = {(layer.module, kind): names[id(projection(model, layer.module, kind))] + ".parametrizations.weight.0.delta"
                for layer in self.selection for kind in kinds}
        trainable = sum(d.numel() for d in deltas_of(model, self.selection, kinds).values())
        if trainer.accelerator.is_main_process:
            trainer._save(str(run_dir.final), state_dict=fold_state_dict(state))
            deltas = {key: state[name] for key, name in keys.items()}
            info = {"trainable_parameters": trainable, "base_model": getattr(model.config, "_name_or_path", None)}
            info = save_adapter(run_dir.final, self.selection, deltas, kinds, info)
            log(f"adapter {run_dir.final / ADAPTER_FILE}: {info['artifact_bytes']:,} bytes, {trainable:,} parameters")
        trainer.accelerator.wait_for_everyone()
        return f"folded model (safetensors), tokenizer and NeST adapter ({ADAPTER_FILE}, {trainable:,} parameters)"

    @classmethod
    def claims(cls, directory: Path) -> bool:
        """A mid-run checkpoint stores base weights and cluster vectors apart (final/ is already folded)."""
        return is_parametrised_state(checkpoint_keys(Path(directory)))

    @classmethod
    def load_trained(cls, directory: str, model_cfg):
        """final/ as it is; a mid-run checkpoint with its cluster vectors folded into the weights."""
        from safetensors.torch import load_file

        model = super().load_trained(directory, model_cfg)
        files = sorted(Path(directory).glob("*.safetensors")) if Path(directory).is_dir() else []
        state = {k: v for f in files for k, v in load_file(str(f)).items()}
        if is_parametrised_state(state):
            missing, unexpected = model.load_state_dict(fold_state_dict(state), strict=False)
            if unexpected or [k for k in missing if k != "lm_head.weight"]:
                raise ConfigError(f"{directory}: NeST checkpoint does not fit the model ({missing}, {unexpected})")
        return model
