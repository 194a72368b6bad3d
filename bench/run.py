"""Benchmarks: speed and memory against plain TRL, what our defaults buy, cost growth, NeST vs LoRA vs full,
a beta sweep sharing the reference cache.

    python -m bench.run                      # everything (a few minutes on a CPU)
    python -m bench.run --parts overhead     # one or several parts, comma-separated
    make bench

Every case runs in its own process (``bench/case.py``) so that its peak memory is its own; cases
that are compared run interleaved, several times, and the comparison uses medians of per-step
times measured by the same callback. Results: ``bench/results/<part>.json`` (figures, hardware,
versions), ``bench/results/results.md`` (tables) and ``bench/results/*.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed", "liger-kernel")
# A model big enough for the reference copy and optimiser state to show in memory (~10M parameters),
# small enough for a CPU: the tiny model's tokenizer, a wider and deeper Llama, random weights (seeded).
BENCH_MODEL = {"hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 6, "num_attention_heads": 6,
               "num_key_value_heads": 2, "head_dim": 64}


# --------------------------------------------------------------------------- environment


def environment() -> dict:
    import torch

    from align_train.run_dir import package_versions

    versions = package_versions(PACKAGES)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


# --------------------------------------------------------------------------- running cases


def run_case(spec: dict, nproc: int = 1) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if nproc > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                   "--master_port", str(free_port()), "-m", "bench.case", json.dumps(spec)]
    else:
        command = [sys.executable, "-m", "bench.case", json.dumps(spec)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark case failed ({' '.join(command[:6])} ...):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def median_step(result: dict, skip: int = 2) -> float:
    """Median optimizer-step time, leaving out the first steps (allocator and kernel warm-up)."""
    times = result["step_times"][skip:] or result["step_times"]
    return statistics.median(times)


def build_bench_model(directory: Path) -> Path:
    """The tiny model's tokenizer with a wider, deeper Llama config and seeded random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (directory / "model.safetensors").is_file():
        return directory
    tiny = ROOT / "data" / "tiny-llama"
    config = AutoConfig.from_pretrained(tiny)
    for key, value in BENCH_MODEL.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(directory)
    return directory


def write_rows(rows, path: Path) -> Path:
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def training_order(rows_file: Path, overrides: list[str]) -> list[dict]:
    """The rows in the order align-train's data layer hands them to the trainer (it shuffles, seeded)."""
    from hydra import compose, initialize_config_dir

    from align_train.composition import setup
    from align_train.data import load_data
    from align_train.objectives import make_objective
    from align_train.paths import CONF_DIR

    setup()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    objective = make_objective(cfg.objective)
    return load_data(cfg.data, objective.accepts, objective.name).train.to_list()


def save(part: str, content: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{part}.json"
    path.write_text(json.dumps({"part": part, "environment": environment(), **content}, indent=2) + "\n")
    print(f"[bench] {path.relative_to(ROOT)}", file=sys.stderr)
    return path


# --------------------------------------------------------------------------- parts


def dpo_overrides(model: Path, rows: Path, steps: int, global_batch: int, per_device: int) -> list[str]:
    return [
        "recipe=tiny/dpo", f"model.name_or_path={model}", f"data.train.tiny_preference.path={rows}",
        "data.eval_fraction=0", f"train.max_steps={steps}", f"train.global_batch_size={global_batch}",
        f"train.per_device_batch_size={per_device}", "train.logging_steps=1", "train.save_steps=0",
        "eval=none",
    ]


def one_epoch_dpo(work: Path, quick: bool) -> tuple[Path, Path, int, int, list[str]]:
    """(model, rows file, rows, steps, overrides) for one whole epoch of the bundled pairs, 8 per step.

    Precomputing reference log-probs pays one pass over the data up front, so a shorter run would charge
    it for rows it never trains on.
    """
    model = build_bench_model(work / "bench-llama")
    n_rows = 80 if quick else 320
    steps = n_rows // 8
    rows = write_rows([json.loads(line) for line in (ROOT / "data/tiny/preference.jsonl").open()][:n_rows],
                      work / f"pairs-{n_rows}.jsonl")
    return model, rows, n_rows, steps, dpo_overrides(model, rows, steps, 8, 8)


def part_overhead(work: Path, quick: bool) -> dict:
    """The same DPO run through align-train and through a plain TRL script: step time and loss curves."""
    model = build_bench_model(work / "bench-llama")
    steps, repeats = (12, 2) if quick else (30, 3)
    source = write_rows([json.loads(line) for line in (ROOT / "data/tiny/preference.jsonl").open()],
                        work / "pairs.jsonl")
    overrides = dpo_overrides(model, source, steps, 8, 8)
    ordered = write_rows(training_order(source, overrides), work / "pairs-in-training-order.jsonl")
    align, plain = [], []
    for i in range(repeats):  # interleaved, so drift in machine load hits both alike
        align.append(run_case({"kind": "align", "overrides": overrides, "out": str(work / f"align-{i}")}))
        plain.append(run_case({"kind": "trl_dpo", "model": str(model), "rows": str(ordered),
                               "out": str(work / f"trl-{i}"), "steps": steps, "global_batch": 8, "per_device": 8}))
    align_step = statistics.median(median_step(r) for r in align)
    plain_step = statistics.median(median_step(r) for r in plain)
    max_diff = max(abs(a - b) for a, b in zip(align[0]["losses"], plain[0]["losses"]))
    return {
        "setup": {"model_parameters": align[0]["total"], "steps": steps, "global_batch": 8, "repeats": repeats,
                  "objective": "dpo sigmoid, full tuning, reference copy"},
        "align_train_step_s": align_step,
        "plain_trl_step_s": plain_step,
        "overhead_ratio": align_step / plain_step,
        "align_train_wall_s": statistics.median(r["wall_seconds"] for r in align),
        "plain_trl_wall_s": statistics.median(r["wall_seconds"] for r in plain),
        "loss_curves_identical": len(align[0]["losses"]) == len(plain[0]["losses"]) and max_diff < 1e-5,
        "loss_max_abs_difference": max_diff,
        "losses": {"align_train": align[0]["losses"], "plain_trl": plain[0]["losses"]},
        "peak_rss_mb": {"align_train": statistics.median(r["peak_rss_mb"] for r in align),
                        "plain_trl": statistics.median(r["peak_rss_mb"] for r in plain)},
        "peak_above_baseline_mb": {"align_train": statistics.median(r["peak_above_baseline_mb"] for r in align),
                                   "plain_trl": statistics.median(r["peak_above_baseline_mb"] for r in plain)},
    }


def part_defaults(work: Path, quick: bool) -> dict:
    """What the defaults buy: precomputed reference log-probs, padding-free, LoRA's reference."""
    model, rows, _, steps, base = one_epoch_dpo(work, quick)
    cases = {
        "reference_copy": {"kind": "align", "overrides": base},
        "precomputed_reference": {"kind": "align", "overrides": [*base, "objective.precompute_ref_log_probs=true"]},
        "padded": {"kind": "align", "overrides": base},
        "padding_free": {"kind": "align", "overrides": [*base, "objective.padding_free=true"]},
        "lora_adapter_disabled_reference": {"kind": "align", "overrides": [*base, "tuning=lora"]},
        "lora_separate_reference_copy": {"kind": "trl_dpo", "model": str(model), "rows": str(rows), "steps": steps,
                                         "global_batch": 8, "per_device": 8, "lora": True,
                                         "separate_reference": True},
        "lora_adapter_disabled_reference_trl": {"kind": "trl_dpo", "model": str(model), "rows": str(rows),
                                                "steps": steps, "global_batch": 8, "per_device": 8, "lora": True,
                                                "separate_reference": False},
    }
    results = {}
    for name, spec in cases.items():
        results[name] = run_case({**spec, "out": str(work / f"defaults-{name}")})

    def row(name):
        r = results[name]
        return {"step_s": median_step(r), "wall_s": r["wall_seconds"], "peak_rss_mb": r["peak_rss_mb"],
                "peak_above_baseline_mb": r["peak_above_baseline_mb"], "trainable": r["trainable"],
                "final_loss": r["losses"][-1]}

    figures = {name: row(name) for name in cases}
    comparisons = {
        "precomputed_vs_reference_copy": ("precomputed_reference", "reference_copy"),
        "padding_free_vs_padded": ("padding_free", "padded"),
        "lora_adapter_disabled_vs_separate_copy": ("lora_adapter_disabled_reference_trl", "lora_separate_reference_copy"),
    }
    ratios = {
        key: {"step_time_ratio": figures[a]["step_s"] / figures[b]["step_s"],
              "wall_ratio": figures[a]["wall_s"] / figures[b]["wall_s"],
              "peak_memory_ratio": figures[a]["peak_above_baseline_mb"] / figures[b]["peak_above_baseline_mb"],
              "final_loss_difference": abs(figures[a]["final_loss"] - figures[b]["final_loss"])}
        for key, (a, b) in comparisons.items()
    }
    return {"setup": {"model_parameters": results["reference_copy"]["total"], "steps": steps, "global_batch": 8},
            "cases": figures, "ratios": ratios}


def part_scaling(work: Path, quick: bool) -> dict:
    """Step time and peak memory against sequence length and batch size; one process against two."""
    model = build_bench_model(work / "bench-llama")
    steps = 6 if quick else 10
    lengths = (64, 128, 256) if quick else (64, 128, 256, 512)
    batches = (2, 4, 8) if quick else (2, 4, 8, 16)
    sentence = " The quick brown fox checks every step of the plan before moving on."
    long_rows = [{"prompt": f"Question {i}: what next?", "chosen": "Answer:" + sentence * 60,
                  "rejected": "Reply:" + sentence * 60} for i in range(64)]
    rows = write_rows(long_rows, work / "long-pairs.jsonl")

    def case(length, batch, nproc=1, per_device=None):
        overrides = [*dpo_overrides(model, rows, steps, batch, per_device or batch), f"model.max_length={length}"]
        if nproc > 1:
            overrides.append("train.use_cpu=true")
        r = run_case({"kind": "align", "overrides": overrides, "out": str(work / f"scale-{length}-{batch}-{nproc}")},
                     nproc=nproc)
        return {"sequence_length": length, "global_batch": batch, "processes": nproc, "step_s": median_step(r),
                "tokens_per_s": batch * 2 * length / median_step(r), "peak_rss_mb": r["peak_rss_mb"],
                "peak_above_baseline_mb": r["peak_above_baseline_mb"]}

    by_length = [case(length, 8) for length in lengths]
    by_batch = [case(128, batch) for batch in batches]
    processes = [case(128, 8, 1, 8), case(128, 8, 2, 4)]
    return {"setup": {"model_parameters": BENCH_MODEL, "steps": steps, "objective": "dpo, full tuning",
                      "note": "tokens per step = global batch x 2 (chosen, rejected) x length (every row truncated "
                              "to the length); peak_rss_mb is per process"},
            "by_sequence_length": by_length, "by_batch_size": by_batch, "processes": processes}


# Real architectures, shapes from their published configs (no weights): what NeST and LoRA would train.
REAL_ARCHITECTURES = {
    "Llama-3-8B": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                 num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                 tie_word_embeddings=False)),
    "Qwen2.5-7B": ("qwen2", dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                 num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                                 tie_word_embeddings=False)),
}
# Each strategy at the learning rate that suits it (as in scripts/compare_tuning.py).
TUNING_RATES = {"full": 3e-4, "lora": 3e-3, "nest": 1e-2}
ARTIFACTS = {"full": "model.safetensors", "lora": "adapter_model.safetensors", "nest": "nest_adapter.safetensors"}


def nest_on_meta(model, nest_cfg):
    """A meta-device model with NeST's parametrisation applied by the strategy itself, as if every MLP
    block kept ``clusters`` clusters (the most the probe can select: a layer with fewer neurons past the
    threshold keeps fewer clusters, one with none is skipped). The neurons are placeholders: the count
    depends on the clusters, the hidden size and the weight kinds, not on which neurons they hold."""
    import torch

    from align_train.tuning.nest.probe import mlp_blocks
    from align_train.tuning.nest.select import LayerSelection
    from align_train.tuning.nest.strategy import NestTuning

    k = nest_cfg.clusters
    strategy = NestTuning(nest_cfg)
    strategy.selection = [LayerSelection(name, torch.arange(k), torch.arange(k), k) for name, _ in mlp_blocks(model)]
    return strategy.apply(model)


def real_architecture_counts() -> dict:
    """Trainable parameters of LoRA (peft) and NeST (its own parametrisation), both applied to the real
    architecture built on the meta device: shapes without memory."""
    import torch
    from omegaconf import OmegaConf
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from align_train.config import LoraTuningConfig, NestTuningConfig
    from align_train.tuning.lora import LoraTuning

    lora_defaults, nest_defaults = LoraTuningConfig(), OmegaConf.structured(NestTuningConfig())
    counts = {}
    for name, (model_type, shape) in REAL_ARCHITECTURES.items():
        config = AutoConfig.for_model(model_type, **shape)
        with torch.device("meta"):
            lora_base, nest_base = AutoModelForCausalLM.from_config(config), AutoModelForCausalLM.from_config(config)
        total = sum(p.numel() for p in lora_base.parameters())
        # the strategy's own peft config: its target presets (attention, mlp) resolved against this model
        lora_strategy = LoraTuning(OmegaConf.structured(lora_defaults))
        lora_strategy.targets = lora_strategy.resolve_targets(lora_base)
        lora = get_peft_model(lora_base, lora_strategy.peft_config())
        nest = nest_on_meta(nest_base, nest_defaults)
        trainable = {kind: [p for p in m.parameters() if p.requires_grad] for kind, m in (("lora", lora), ("nest", nest))}
        assert all(p.is_meta for ps in trainable.values() for p in ps), "counted on the meta device, nothing allocated"
        lora_trainable, nest_trainable = (sum(p.numel() for p in trainable[k]) for k in ("lora", "nest"))
        counts[name] = {"total": total, "lora": lora_trainable, "lora_rank": lora_defaults.r, "nest": nest_trainable,
                        "nest_clusters_per_layer": nest_defaults.clusters,
                        "lora_over_nest": lora_trainable / nest_trainable}
    return counts


def part_nest(work: Path, quick: bool) -> dict:
    """NeST against LoRA and full fine-tuning on the tiny model, same data and steps, and real-model counts."""
    rows = {}
    for tuning, lr in TUNING_RATES.items():
        out = work / f"nest-{tuning}"
        overrides = ["recipe=tiny/nest", f"tuning={tuning}", f"train.learning_rate={lr}", "train.logging_steps=1"]
        if quick:
            overrides += ["train.max_steps=8", "eval.refusal.prompts.max_prompts=20",
                          "eval.over_refusal.prompts.max_prompts=20"]
        r = run_case({"kind": "align", "overrides": overrides, "out": str(out)})
        scored = [e for e in r["evaluations"] if not e.get("skipped")]
        first, last = scored[0], scored[-1]
        rows[tuning] = {
            "learning_rate": lr,
            "trainable": r["trainable"],
            "total": r["total"],
            # AdamW keeps two fp32 moments per trainable parameter
            "optimizer_state_bytes": 2 * 4 * r["trainable"],
            "peak_above_baseline_mb": r["peak_above_baseline_mb"],
            "step_s": median_step(r),
            "artifact_bytes": (out / "final" / ARTIFACTS[tuning]).stat().st_size,
            "steps": r["steps"],
            "refusal_rate": [first.get("refusal_rate"), last.get("refusal_rate")],
            "over_refusal_rate": [first.get("over_refusal_rate"), last.get("over_refusal_rate")],
            "perplexity": [first.get("perplexity"), last.get("perplexity")],
        }
    real = real_architecture_counts()
    table = ["| tuning | lr | trainable | optimizer state | peak RSS above libraries (MB) | step (s) | artifact | "
             "refusal (harmful) | over-refusal (borderline) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in rows.items():
        table.append(
            f"| {name} | {row['learning_rate']:g} | {row['trainable']:,} | {row['optimizer_state_bytes'] / 1024:.1f} KiB | "
            f"{row['peak_above_baseline_mb']:.0f} | {row['step_s']:.4f} | {row['artifact_bytes'] / 1024:.1f} KiB | "
            f"{row['refusal_rate'][0]:.3f} -> {row['refusal_rate'][1]:.3f} | "
            f"{row['over_refusal_rate'][0]:.3f} -> {row['over_refusal_rate'][1]:.3f} |")
    table += ["", "| architecture | parameters | LoRA (r=%d, all linear) | NeST (%d clusters x layers x hidden) | LoRA / NeST |"
              % (next(iter(real.values()))["lora_rank"], next(iter(real.values()))["nest_clusters_per_layer"]),
              "| --- | --- | --- | --- | --- |"]
    for name, c in real.items():
        table.append(f"| {name} | {c['total']:,} | {c['lora']:,} | {c['nest']:,} | {c['lora_over_nest']:.0f}x |")
    return {"setup": {"recipe": "tiny/nest (SFT on refusals + helpful answers, eval=tiny)", "quick": quick},
            "tiny": rows, "real_architectures": real, "table_md": table}


# Dense bf16 peak FLOP/s by device name (vendor figures, no sparsity), for model FLOPs utilisation.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}
# About 0.5B parameters with the tiny tokenizer's small vocabulary: the cost sits in the blocks.
GPU_MODEL = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
             "num_key_value_heads": 16, "head_dim": 64, "max_position_embeddings": 2048}


# Vocabularies of the GPU cases: the tiny tokenizer's, and Llama 3's (the logits dominate memory there).
GPU_VOCABS = {"small": None, "128k": 128256}
# DPO variants measured on the GPU, each against the default (a reference copy scored in every step).
# Reference FLOPs per token: the reference forward (2N) is paid in every step by the default, once per
# sweep by the precomputed, cached log-probs (its up-front pass is in the wall clock, not in the steps).
GPU_DPO_VARIANTS = {
    "default": ([], 8),
    "precomputed_reference": (["objective.precompute_ref_log_probs=true"], 6),
}
SWEEP_BETAS = (0.05, 0.1, 0.2, 0.4)


def part_gpu(work: Path, quick: bool) -> dict:
    """Tokens per second and MFU of a ~0.5B random model in bf16 (DPO and SFT, +- Liger, small and 128k
    vocabularies, the DPO variants above), and a 4-point beta sweep sharing the reference cache."""
    import importlib.util

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not torch.cuda.is_available():
        return {"skipped": "no GPU on this machine; run `python -m bench.run --parts gpu` where one is available"}
    device = torch.cuda.get_device_name(0)
    peak = next((flops for name, flops in PEAK_BF16_FLOPS.items() if name in device), None)

    def build(vocab) -> tuple[Path, int]:
        model_dir = work / f"gpu-llama-{vocab or 'small'}"
        config = AutoConfig.from_pretrained(ROOT / "data" / "tiny-llama")
        for key, value in {**GPU_MODEL, **({"vocab_size": vocab, "tie_word_embeddings": False} if vocab else {})}.items():
            setattr(config, key, value)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        n = sum(p.numel() for p in model.parameters())
        model.save_pretrained(model_dir)
        AutoTokenizer.from_pretrained(ROOT / "data" / "tiny-llama").save_pretrained(model_dir)
        del model
        return model_dir, n

    length, batch, steps = 1024, 8, 6 if quick else 20
    sentence = " The quick brown fox checks every step of the plan before moving on."
    pairs = write_rows([{"prompt": f"Question {i}: what next?", "chosen": "Answer:" + sentence * 200,
                         "rejected": "Reply:" + sentence * 200} for i in range(batch * steps)], work / "gpu-pairs.jsonl")
    documents = write_rows([{"text": f"Document {i}." + sentence * 200} for i in range(batch * steps)],
                           work / "gpu-docs.jsonl")
    liger_options = [False, True] if importlib.util.find_spec("liger_kernel") else [False]

    def overrides_for(objective, model_dir, data_file, fmt, n_steps=steps):
        source = "tiny_preference" if objective == "dpo" else "tiny_sft"
        return [
            f"recipe=tiny/{objective}", f"model.name_or_path={model_dir}", "model.dtype=bfloat16",
            f"model.max_length={length}", "train.precision=bf16", "train.use_cpu=false",
            f"data.train.{source}.path={data_file}", f"data.train.{source}.format={fmt}",
            "data.eval_fraction=0", f"train.max_steps={n_steps}", f"train.global_batch_size={batch}",
            f"train.per_device_batch_size={batch}", "train.logging_steps=1", "train.save_steps=0", "eval=none",
        ]

    rows = []
    for vocab_name, vocab in GPU_VOCABS.items():
        model_dir, n_params = build(vocab)
        cases = [("dpo", variant, extra, flops, pairs, "preference", 2)
                 for variant, (extra, flops) in GPU_DPO_VARIANTS.items()]
        cases.append(("sft", "default", [], 6, documents, "documents", 1))
        for objective, variant, extra, flops_per_token, data_file, fmt, sequences in cases:
            for liger in liger_options:
                overrides = [*overrides_for(objective, model_dir, data_file, fmt), *extra]
                if liger:
                    overrides.append("+train.trainer_kwargs.use_liger_kernel=true")
                out = work / f"gpu-{vocab_name}-{objective}-{variant}-{liger}"
                r = run_case({"kind": "align", "overrides": overrides, "out": str(out)})
                tokens_per_s = batch * sequences * length / median_step(r)
                rows.append({"vocab": vocab_name, "model_parameters": n_params, "objective": objective,
                             "variant": variant, "liger": liger, "step_s": median_step(r),
                             "tokens_per_s": tokens_per_s, "gpu_peak_mb": r["gpu_peak_mb"],
                             "wall_s": r["wall_seconds"], "final_loss": r["losses"][-1],
                             "mfu": flops_per_token * n_params * tokens_per_s / peak if peak else None})

    # The beta sweep on the GPU (the small vocabulary): one epoch of the pairs per run, in separate processes.
    model_dir, _ = build(None)
    sweep = {"cached": {}, "independent": {}}
    for beta in SWEEP_BETAS:
        base = [*overrides_for("dpo", model_dir, pairs, "preference"), f"objective.beta={beta}"]
        sweep["cached"][beta] = run_case({"kind": "align", "out": str(work / "gpu-sweep-cached" / f"beta-{beta}"),
                                          "overrides": [*base, "objective.precompute_ref_log_probs=true"]})
        sweep["independent"][beta] = run_case({"kind": "align", "overrides": base,
                                               "out": str(work / "gpu-sweep-independent" / f"beta-{beta}")})
    walls = {kind: sum(r["wall_seconds"] for r in runs.values()) for kind, runs in sweep.items()}
    return {"device": device, "peak_bf16_flops": peak, "sequence_length": length, "global_batch": batch,
            "rows": rows,
            "sweep": {"betas": list(SWEEP_BETAS), "cached_wall_s": walls["cached"],
                      "independent_wall_s": walls["independent"],
                      "wall_ratio_vs_independent": walls["cached"] / walls["independent"],
                      "loss_max_abs_difference": max(abs(a - b) for beta in SWEEP_BETAS for a, b in zip(
                          sweep["cached"][beta]["losses"], sweep["independent"][beta]["losses"]))},
            "note": "every sequence is truncated to the length, so tokens per step = batch x sequences x length; "
                    "MFU counts 6N FLOPs per trained token, plus 2N for a reference scored in the step"}


def part_sweep(work: Path, quick: bool) -> dict:
    """A 4-point beta sweep sharing the reference cache against four independent runs (bench/sweep.py)."""
    from bench.sweep import part_sweep as sweep

    return sweep(work, quick)


def part_data_loading(work: Path, quick: bool) -> dict:
    """Load time and peak memory of the data layer, before and after, on a generated file (bench/data_loading.py)."""
    from bench.data_loading import measure

    (work / "data").mkdir(parents=True, exist_ok=True)
    return measure(20_000 if quick else 1_000_000, work / "data")


# Real vocabularies on a model with few layers, so that the output projection's cost shows as it does on
# real models and the whole fits on a CPU: a random 2-layer, 256-wide Llama.
VOCAB_MODEL = {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 64, "tie_word_embeddings": False,
               "max_position_embeddings": 4096}
SENTENCE = " The quick brown fox checks every step of the plan before moving on."  # 20 tokens


def build_vocab_model(directory: Path, vocab: int) -> Path:
    """``VOCAB_MODEL`` with a ``vocab``-token output projection, seeded random weights, the tiny tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (directory / "model.safetensors").is_file():
        return directory
    config = AutoConfig.from_pretrained(ROOT / "data" / "tiny-llama")
    for key, value in {**VOCAB_MODEL, "vocab_size": vocab}.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(ROOT / "data" / "tiny-llama").save_pretrained(directory)
    return directory


def text_of(tokens: int) -> str:
    return SENTENCE * max(1, round(tokens / 20))


def lognormal_pairs(n: int, seed: int = 0, cap: int = 2000) -> list[dict]:
    """Prompt and answer lengths drawn log-normal, shaped like UltraFeedback's (prompt median ~120 tokens,
    answers ~250, long right tails), each pair at most ``cap`` tokens long."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt = min(int(rng.lognormvariate(4.8, 0.9)), cap // 2)
        chosen, rejected = (min(int(rng.lognormvariate(5.5, 0.7)), cap - prompt) for _ in range(2))
        rows.append({"prompt": f"Question {i}:" + text_of(prompt), "chosen": "Answer:" + text_of(chosen),
                     "rejected": "Reply:" + text_of(rejected)})
    return rows


def compare_with_trl(work: Path, name: str, model: Path, rows: Path, steps: int, batch: int, max_length: int,
                     align_cases: dict[str, list[str]], repeats: int) -> dict:
    """align-train cases and plain TRL DPO on the same model, rows (in training order) and seed, interleaved."""
    overrides = [*dpo_overrides(model, rows, steps, batch, batch), f"model.max_length={max_length}"]
    ordered = write_rows(training_order(rows, overrides), work / f"{name}-in-training-order.jsonl")
    results = {case: [] for case in ["plain_trl", *align_cases]}
    for i in range(repeats):
        for case, extra in align_cases.items():
            results[case].append(run_case({"kind": "align", "overrides": [*overrides, *extra],
                                           "out": str(work / f"{name}-{case}-{i}")}))
        results["plain_trl"].append(run_case({"kind": "trl_dpo", "model": str(model), "rows": str(ordered),
                                              "out": str(work / f"{name}-trl-{i}"), "steps": steps,
                                              "global_batch": batch, "per_device": batch,
                                              "max_length": max_length}))

    def figures(runs):
        return {"step_s": statistics.median(median_step(r, skip=1) for r in runs),
                "step_times": [r["step_times"] for r in runs],
                # what training adds once the models are loaded: optimizer state, gradients, activations, logits
                "peak_above_loaded_mb": statistics.median(r["peak_rss_mb"] - r["rss_at_train_begin_mb"]
                                                          for r in runs),
                "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                "losses": runs[0]["losses"]}

    return {case: figures(runs) for case, runs in results.items()}


def part_memory(work: Path, quick: bool) -> dict:
    """Peak memory and step time against TRL's DPOTrainer at a 128,256-token vocabulary and 1,024 tokens."""
    model = build_vocab_model(work / "llama-128k", 128256)
    steps, repeats = (3, 1) if quick else (5, 2)
    # prompt ~400 tokens, answers long enough that every sequence is cut at 1,024
    rows = write_rows([{"prompt": f"Question {i}:" + text_of(400), "chosen": "Answer:" + text_of(1200),
                        "rejected": "Reply:" + text_of(1200)} for i in range(steps)], work / "memory-pairs.jsonl")
    cases = compare_with_trl(work, "memory", model, rows, steps, 1, 1024, {"align_train": []}, repeats)
    ours, trl = cases["align_train"], cases["plain_trl"]
    diff = max(abs(a - b) for a, b in zip(ours["losses"], trl["losses"]))
    return {"setup": {"model": {**VOCAB_MODEL, "vocab_size": 128256}, "sequence_tokens": 1024, "batch_pairs": 1,
                      "steps": steps, "repeats": repeats, "objective": "dpo sigmoid, full tuning, reference copy",
                      "note": "peak = peak RSS minus RSS when training begins (models loaded); step time = median "
                              "over steps after the first, median over interleaved repeats"},
            "cases": cases,
            "peak_memory_ratio_vs_trl": ours["peak_above_loaded_mb"] / trl["peak_above_loaded_mb"],
            "step_time_ratio_vs_trl": ours["step_s"] / trl["step_s"],
            "loss_max_abs_difference": diff}


def part_padding_free(work: Path, quick: bool) -> dict:
    """Padding-free batches against TRL's padded DPO on a log-normal length mix."""
    model = build_vocab_model(work / "llama-32k", 32000)
    steps, repeats, batch, max_length = (3, 1, 2, 1024) if quick else (6, 2, 4, 2048)
    rows = write_rows(lognormal_pairs(steps * batch), work / "lognormal-pairs.jsonl")
    cases = compare_with_trl(work, "padfree", model, rows, steps, batch, max_length,
                             {"align_train_padded": [], "align_train_padding_free": ["objective.padding_free=true"]},
                             repeats)
    trl = cases["plain_trl"]
    return {"setup": {"model": {**VOCAB_MODEL, "vocab_size": 32000}, "max_length": max_length, "batch_pairs": batch,
                      "steps": steps, "repeats": repeats, "lengths": "log-normal prompt (mu 4.8, sigma 0.9) and "
                      "answers (mu 5.5, sigma 0.7), pairs capped at 2,000 tokens"},
            "cases": cases,
            "step_time_ratio_vs_trl": cases["align_train_padding_free"]["step_s"] / trl["step_s"],
            "padded_step_time_ratio_vs_trl": cases["align_train_padded"]["step_s"] / trl["step_s"],
            "loss_max_abs_difference": max(abs(a - b) for a, b in zip(cases["align_train_padding_free"]["losses"],
                                                                     trl["losses"]))}


def part_head(work: Path, quick: bool) -> dict:
    """The output projection and log-probs alone, forward and backward, TRL's fused head against ours, interleaved
    in one process (steadier than whole steps on a shared machine)."""
    import copy
    import time

    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from align_train.inference.logprobs import LogprobHead, install_logprob_head

    outputs = ("log_probs", "entropy", "mean_logits", "is_top1")  # what DPOTrainer asks for
    trl_model = AutoModelForCausalLM.from_pretrained(build_vocab_model(work / "llama-128k", 128256))
    add_fused_lm_head(trl_model, outputs=outputs)
    ours = copy.deepcopy(trl_model)
    install_logprob_head(ours, LogprobHead(), outputs)
    torch.manual_seed(0)
    ids = torch.randint(5, 2000, (2, 1024))  # a pair at 1,024 tokens, the first 400 of each the prompt
    labels = ids.clone()
    labels[:, :400] = -100

    def timed(model):
        start = time.perf_counter()
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, fused_lm_head=True
              ).log_probs.sum().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    times = {"plain_trl": [], "align_train": []}
    for _ in range(3 if quick else 6):
        times["plain_trl"].append(timed(trl_model))
        times["align_train"].append(timed(ours))
    return {"setup": {"model": {**VOCAB_MODEL, "vocab_size": 128256}, "sequences": 2, "tokens_each": 1024, "prompt_tokens_each": 400},
            "seconds": times, "time_ratio_vs_trl": statistics.median(times["align_train"])
            / statistics.median(times["plain_trl"])}


PARTS = {"overhead": part_overhead, "defaults": part_defaults, "scaling": part_scaling, "nest": part_nest,
         "gpu": part_gpu, "data_loading": part_data_loading, "sweep": part_sweep, "memory": part_memory,
         "padding_free": part_padding_free, "head": part_head}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke run)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    work = Path(tempfile.mkdtemp(prefix="align-train-bench-"))
    try:
        for part in parts:
            print(f"[bench] {part} ...", file=sys.stderr, flush=True)
            save(part, PARTS[part](work, args.quick))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from bench.report import write_report

    write_report(RESULTS)


if __name__ == "__main__":
    main()
