"""Launching at scale on CPU: two-process data parallel (torchrun, gloo), DeepSpeed ZeRO-2 / ZeRO-3, the
shipped accelerate and DeepSpeed configs, the SLURM script and a preempted-then-requeued job, a kill
in the middle of a checkpoint, and NaN losses.

Every multi-process run here trains the same thing (tiny DPO, global batch 16 = 2 processes x 4 x
accumulation 2, STEPS steps), so their final weights can be compared with one another.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from align_train.errors import ConfigError
from align_train.launch.checks import Launch, check_launch, launch_from_accelerate_config, launch_from_env
from align_train.nonfinite import NonFiniteLoss
from align_train.paths import PROJECT_ROOT
from align_train.evaluation.evaluator import evaluation_records
from align_train.run_dir import COMPLETE_MARKER, RunDir, checkpoint_problem, checkpoints, is_complete_checkpoint, resolve_resume
from tests.conftest import compose_config, run_recipe

STEPS = 6
# One run, many launchers: the same global batch of 16 and the same steps everywhere.
RUN = ["recipe=tiny/dpo", f"train.max_steps={STEPS}", "train.learning_rate=1e-3", "train.global_batch_size=16", "train.per_device_batch_size=4",
       "train.save_steps=0", "train.logging_steps=1", "eval=none", "data.max_eval_rows=16"]
# The evaluation hook in the data-parallel and ZeRO-3 runs: few prompts, batches of 3 so the processes get
# unequal shares (under ZeRO-3 one of them must keep stepping through the collective forward passes).
HOOK = ["eval=tiny", "eval.refusal.prompts.max_prompts=8", "eval.over_refusal.prompts.max_prompts=5",
        "eval.refusal.generation.batch_size=3", "eval.over_refusal.generation.batch_size=3",
        "eval.refusal.generation.max_new_tokens=8", "eval.over_refusal.generation.max_new_tokens=8",
        "eval.preference.batch_size=3", "eval.perplexity.batch_size=3"]
PROBE = str(PROJECT_ROOT / "tests" / "launch_probe.py")
ACCELERATE_CONFIGS = sorted((PROJECT_ROOT / "launch" / "accelerate").glob("*.yaml"))
DEEPSPEED_CONFIGS = sorted((PROJECT_ROOT / "launch" / "deepspeed").glob("*.json"))


def env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", **extra}


def run(command: list[str], cwd: Path, timeout: int = 400, **extra) -> subprocess.CompletedProcess:
    out = subprocess.run(command, cwd=cwd, env=env(**extra), capture_output=True, text=True, timeout=timeout)
    return out


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    weights = load_file(str(run_dir / "final" / "model.safetensors"))
    # The tiny model ties its output layer to the embeddings; DeepSpeed saves the tied tensor under lm_head.
    if "lm_head.weight" in weights:
        weights.setdefault("model.embed_tokens.weight", weights["lm_head.weight"])
        del weights["lm_head.weight"]
    return weights


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def probed_rows(probe_dir: Path, rank: int, step: int) -> list[str]:
    records = [json.loads(line) for line in (probe_dir / f"rank{rank}.jsonl").read_text().splitlines()]
    return [row for r in records if r["step"] == step for row in r["rows"]]


# --------------------------------------------------------------------------- data parallel


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """torchrun, 2 CPU processes (gloo), with the probe recording what each rank trains on."""
    root = tmp_path_factory.mktemp("ddp")
    probe = root / "probe"
    probe.mkdir()
    out = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", PROBE, *RUN, *HOOK],
              cwd=root, ALIGN_TRAIN_PROBE_DIR=str(probe))
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = (root / "runs" / "tiny-dpo").iterdir()
    return run_dir, probe, out


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """The same global batch on one process (micro-batch 8 x accumulation 2)."""
    root = tmp_path_factory.mktemp("single")
    probe = root / "probe"
    probe.mkdir()
    out = run([sys.executable, PROBE, *RUN, "train.per_device_batch_size=8", f"output_dir={root / 'run'}"],
              cwd=root, ALIGN_TRAIN_PROBE_DIR=str(probe))
    assert out.returncode == 0, out.stderr[-3000:]
    return root / "run", probe


def test_two_processes_share_one_run_directory(ddp_run):
    """One timestamped run directory, world size 2, accumulation derived from it, one process logging."""
    run_dir, _, out = ddp_run
    assert json.loads((run_dir / "run_info.json").read_text())["world_size"] == 2
    assert out.stderr.count("[align-train] data:") == 1, "only the main process logs"
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first = next(line for line in lines if not any(key.startswith("eval/") for key in line))  # the first step's
    # 540 rows / (4 per device x 2 processes) = 68 micro-batches, accumulation 16 / 8 = 2: 34 steps an epoch.
    # (Had the world size been taken as 1, accumulation would be 4 and an epoch 17 steps.)
    assert first["step"] == 1 and first["epoch"] == pytest.approx(1 / 34, rel=1e-3)


def test_ranks_train_on_different_shards_of_the_same_global_batch(ddp_run, single_run):
    _, ddp_probe, _ = ddp_run
    _, single_probe = single_run
    for step in (1, STEPS):
        rank0, rank1 = probed_rows(ddp_probe, 0, step), probed_rows(ddp_probe, 1, step)
        assert rank0 and rank1 and not set(rank0) & set(rank1), f"step {step}: the ranks share examples"
        assert sorted(rank0 + rank1) == sorted(probed_rows(single_probe, 0, step)), (
            f"step {step}: together the ranks train on exactly the one-process run's batch")


def test_data_parallel_matches_one_process_with_the_same_global_batch(ddp_run, single_run):
    run_dir, _, _ = ddp_run
    ddp, single = final_weights(run_dir), final_weights(single_run[0])
    base = load_file(str(PROJECT_ROOT / "data" / "tiny-llama" / "model.safetensors"))
    moved, difference = max_difference(ddp, base), max_difference(ddp, single)
    print(f"\n[DDP vs one process] max |weight difference| = {difference:.3g} (training moved weights by {moved:.3g})")
    assert moved > 1e-3, "training moved the weights"
    assert difference < 1e-5  # measured 2.8e-6 (docs/launching.md)


def one_process_evaluation(run_dir: Path, out_dir: Path) -> dict[int, dict]:
    """The run's own suites on its start and its saved checkpoints, scored here in one process."""
    from align_train.cli.evaluate import heldout_of, load_for_eval, run_config, run_targets
    from align_train.evaluation.evaluator import Evaluator

    cfg = run_config(run_dir)
    evaluator = Evaluator(cfg.eval, out_dir, heldout=heldout_of(cfg), max_length=cfg.model.max_length)
    records = {}
    for step, path, is_start in run_targets(RunDir(run_dir), cfg):
        model, tokenizer = load_for_eval(path, cfg.model, cfg.tuning.name)
        records[step] = evaluator.evaluate(model, tokenizer, step, is_reference=is_start)
    return records


def assert_hook_equals_one_process(run_dir: Path, out_dir: Path, steps: list[int]) -> None:
    """Every score and every generation the multi-process hook wrote equals a one-process evaluation."""
    hook = {r["step"]: r for r in evaluation_records(run_dir / "eval")}
    alone = one_process_evaluation(run_dir, out_dir)
    assert sorted(hook) == sorted(alone) == steps
    for step in steps:
        assert not hook[step]["errors"] and not alone[step]["errors"]
        for suite, result in alone[step]["suites"].items():
            assert hook[step]["suites"][suite]["metrics"] == pytest.approx(result["metrics"], abs=1e-6), (step, suite)
            assert hook[step]["suites"][suite]["samples"] == result["samples"], (step, suite)
        generated = hook[step]["suites"]["refusal"]["details"]["prompts"]
        assert generated == 8 and hook[step]["suites"]["over_refusal"]["details"]["prompts"] == 5


def test_the_hook_shares_evaluation_across_processes_and_equals_one_process(ddp_run, tmp_path):
    """Both processes generate and score their share; the main process writes what one process would have."""
    run_dir, _, _ = ddp_run
    assert_hook_equals_one_process(run_dir, tmp_path / "eval", [0, STEPS])
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "eval/refusal_rate" in line] == [0, STEPS], "one metrics line a step"


def test_ranks_end_with_identical_weights(ddp_run):
    _, probe, _ = ddp_run
    assert (probe / "rank0.weights").read_text() == (probe / "rank1.weights").read_text()


# --------------------------------------------------------------------------- DeepSpeed


@pytest.fixture(scope="session")
def deepspeed_ops():
    """DeepSpeed's CPU ops, compiled once per machine into the user's cache and reused by every run.

    DeepSpeed builds its ops on first use (the CPU communication op takes about a minute). The
    extensions directory lives under the user's cache directory, so a fresh clone (CI) pays for it
    once per machine, and it is built here once, before two processes would race to build it.
    """
    pytest.importorskip("deepspeed")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "align-train" / "torch_extensions"
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache))
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    started = time.time()
    ShareMemCommBuilder().load(verbose=False)
    print(f"\n[deepspeed ops] ready in {time.time() - started:.1f}s ({os.environ['TORCH_EXTENSIONS_DIR']})")
    return os.environ["TORCH_EXTENSIONS_DIR"]


@pytest.mark.parametrize("config", ["deepspeed_zero2.yaml", "deepspeed_zero3.yaml"])
def test_deepspeed_on_cpu_ends_close_to_data_parallel(tmp_path, deepspeed_ops, ddp_run, config):
    stage = 2 if "zero2" in config else 3
    hook = HOOK if stage == 3 else []  # the hook under sharded parameters: scored, not skipped
    out = run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(PROJECT_ROOT / "launch" / "accelerate" / config), "--num_processes", "2", "--main_process_port",
               "29531", "-m", "align_train", *RUN, *hook, "train.save_steps=3", f"output_dir={tmp_path / 'run'}"],
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    tmp_path = tmp_path / "run"
    assert (tmp_path / "checkpoint-3" / "global_step3").is_dir(), "a DeepSpeed engine checkpoint"
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-6"]
    difference = max_difference(final_weights(tmp_path), final_weights(ddp_run[0]))
    print(f"\n[ZeRO-{stage} vs DDP] max |weight difference| = {difference:.3g}")
    # Measured: 8.8e-7 (ZeRO-2) and 1.3e-6 (ZeRO-3) while training moves the weights by 3e-3; 5e-6 leaves
    # room for another machine's summation order. docs/launching.md states the same tolerance.
    assert difference < 5e-6
    if stage == 3:
        assert_hook_equals_one_process(tmp_path, tmp_path.parent / "alone", [0, 3, STEPS])


# --------------------------------------------------------------------------- FSDP2 on CPU (gloo)

FSDP_CONFIG = str(PROJECT_ROOT / "launch" / "accelerate" / "fsdp.yaml")


def fsdp_run(root: Path, *overrides: str, port: int, launcher: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """accelerate launch with the shipped FSDP config, 2 CPU processes, the probe recording what each rank holds."""
    probe = root / "probe"
    probe.mkdir(parents=True)
    out = run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", FSDP_CONFIG, "--num_processes",
               "2", "--main_process_port", str(port), *launcher, PROBE, *overrides, f"output_dir={root / 'run'}"],
              cwd=root,
              ALIGN_TRAIN_PROBE_DIR=str(probe))
    assert out.returncode == 0, out.stderr[-3000:]
    return root / "run", probe


def assert_sharded(probe: Path) -> int:
    """Every parameter is a DTensor split along its first dimension, each rank holding its half; the count."""
    held = [json.loads((probe / f"rank{rank}.params.json").read_text()) for rank in (0, 1)]
    assert held[0].keys() == held[1].keys() and held[0]
    for name in held[0]:
        rank0, rank1 = held[0][name], held[1][name]
        assert rank0["dtensor"] and rank1["dtensor"], f"{name} is not sharded"
        assert rank0["placements"] == rank1["placements"] and rank0["placements"][0] in ("S(0)", "Shard(dim=0)"), name
        assert rank0["local"][0] + rank1["local"][0] == rank0["full"][0] and rank0["local"][0] == -(
            -rank0["full"][0] // 2), f"{name}: {rank0['local']} + {rank1['local']} of {rank0['full']}"
        assert rank0["local"][1:] == rank0["full"][1:]
    # After training each rank gathers the same whole weights.
    assert (probe / "rank0.weights").read_text() == (probe / "rank1.weights").read_text()
    return len(held[0])


def test_fsdp_on_cpu_shards_every_parameter_scores_like_one_process_and_ends_where_data_parallel_ends(tmp_path, ddp_run):
    from transformers import AutoModelForCausalLM

    run_dir, probe = fsdp_run(tmp_path, *RUN, *HOOK, port=29535)  # the evaluation hook on sharded parameters
    assert assert_sharded(probe) == len(final_weights(ddp_run[0])), "every weight of the model"
    difference = max_difference(final_weights(run_dir), final_weights(ddp_run[0]))
    print(f"\n[FSDP2 vs DDP] max |weight difference| = {difference:.3g}")
    assert difference < 1e-5  # training moves them by about 3e-3 (see the data-parallel test)
    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")  # a plain checkpoint, not a sharded one
    loaded = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    assert max_difference(loaded, final_weights(run_dir)) == 0
    assert_hook_equals_one_process(run_dir, tmp_path / "alone", [0, STEPS])


# LoRA and NeST (the two strategies that wrap or parametrise the model) against one process with the same
# global batch, which data parallel matches (test_data_parallel_matches_one_process_with_the_same_global_batch).
STRATEGY_RUNS = {
    "lora": ["recipe=tiny/dpo", "tuning=lora"],
    "nest": ["recipe=tiny/nest"],
}


@pytest.mark.parametrize("strategy", sorted(STRATEGY_RUNS))
def test_fsdp_on_cpu_runs_lora_and_nest_sharded_and_ends_where_one_process_ends(tmp_path, strategy):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    steps = [*STRATEGY_RUNS[strategy], "train.max_steps=4", "train.global_batch_size=16", "train.logging_steps=1",
             "train.save_steps=0", "eval=none", "data.max_eval_rows=16"]
    # NeST's neuron indices are buffers, which accelerate's load-once-and-broadcast does not carry (refused at start).
    launcher = ("--fsdp_cpu_ram_efficient_loading", "false") if strategy == "nest" else ()
    run_dir, probe = fsdp_run(tmp_path / "fsdp", *steps, "train.per_device_batch_size=4",
                              port=29536 + (strategy == "nest"), launcher=launcher)
    assert_sharded(probe)
    single = tmp_path / "single"
    run_recipe(single, *steps, "train.per_device_batch_size=8")
    if strategy == "lora":
        fsdp_final, single_final = (AutoPeftModelForCausalLM.from_pretrained(d / "final").state_dict()
                                    for d in (run_dir, single))
        assert any("lora_B" in k and v.abs().sum() > 0 for k, v in fsdp_final.items()), "the adapter trained"
    else:
        fsdp_final, single_final = (AutoModelForCausalLM.from_pretrained(d / "final").state_dict()
                                    for d in (run_dir, single))
    difference = max_difference(fsdp_final, single_final)
    print(f"\n[FSDP2 {strategy} vs one process] max |weight difference| = {difference:.3g}")
    assert difference < 1e-5


# --------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize("path", DEEPSPEED_CONFIGS, ids=lambda p: p.name)
def test_deepspeed_config_is_filled_in_by_the_trainer(path):
    """Each JSON leaves the batch, clipping and precision to the run config ("auto") and is accepted by
    transformers' DeepSpeed integration, which fills the "auto" values from the trainer arguments."""
    pytest.importorskip("deepspeed")
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    config = json.loads(path.read_text())
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size",
                "gradient_clipping"):
        assert config[key] == "auto", key
    ds = HfTrainerDeepSpeedConfig(str(path))
    args = TrainingArguments(output_dir="unused", per_device_train_batch_size=4, gradient_accumulation_steps=2,
                             max_grad_norm=0.5, use_cpu=True, report_to=[])
    ds.trainer_config_process(args)
    filled = ds.config
    assert filled["train_micro_batch_size_per_gpu"] == 4 and filled["gradient_accumulation_steps"] == 2
    assert filled["gradient_clipping"] == 0.5
    assert ds.is_zero3() == ("zero3" in path.name) and ds.is_offload() == ("offload" in path.name)


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(path))
    launch = launch_from_accelerate_config(str(path.relative_to(PROJECT_ROOT)))
    assert config.mixed_precision in ("no", None), "train.precision is the one place precision is set"
    if config.distributed_type == "DEEPSPEED":
        assert config.deepspeed_config["deepspeed_multinode_launcher"] == "standard", "srun starts one per node"
        ds_file = PROJECT_ROOT / config.deepspeed_config["deepspeed_config_file"]
        assert ds_file.is_file() and launch.kind == "deepspeed" and launch.zero_stage in (2, 3)
    elif config.distributed_type == "FSDP":
        from accelerate.utils import FullyShardedDataParallelPlugin

        fsdp = config.fsdp_config
        assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP" and fsdp["fsdp_cpu_ram_efficient_loading"]
        plugin = FullyShardedDataParallelPlugin(
            fsdp_version=fsdp["fsdp_version"], reshard_after_forward=fsdp["fsdp_reshard_after_forward"],
            auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"], state_dict_type=fsdp["fsdp_state_dict_type"],
            cpu_ram_efficient_loading=fsdp["fsdp_cpu_ram_efficient_loading"],
        )
        assert plugin.fsdp_version == 2 and launch.sharded
    else:
        assert config.distributed_type in ("NO", "MULTI_GPU") and launch.kind in ("plain", "ddp")
    # A shipped config accepts the default tiny recipe (on GPUs; on CPUs FSDP needs two or more processes).
    check_launch(compose_config("train.per_device_batch_size=8", "train.use_cpu=false"), 1, launch)


# --------------------------------------------------------------------------- combinations refused at start


def deepspeed_launch(**config) -> Launch:
    ds = {"zero_optimization": {"stage": 3}, **config}
    return Launch("deepspeed", "zero.json", ds)


@pytest.mark.parametrize("overrides, launch, message", [
    (["tuning=lora", "tuning.save_merged=true"], deepspeed_launch(), "tuning.save_merged=true cannot work under"),
    (["tuning=lora", "tuning.save_merged=true"], Launch("fsdp"), "tuning.save_merged=true cannot work under fsdp"),
    (["train.skip_nonfinite_steps=true"], deepspeed_launch(), "train.skip_nonfinite_steps=true cannot work"),
    (["train.optim=sgd"], deepspeed_launch(optimizer={"type": "AdamW"}), "train.optim=sgd would be ignored"),
    (["tuning=nest"], Launch("fsdp", fsdp={"cpu_ram_efficient_loading": True}),
     "tuning=nest cannot start under FSDP with cpu_ram_efficient_loading"),
    ([], deepspeed_launch(train_micro_batch_size_per_gpu=2), "from train.per_device_batch_size"),
    ([], deepspeed_launch(gradient_accumulation_steps=4), "gradient_accumulation_steps=4.*train.global_batch_size"),
    ([], deepspeed_launch(bf16={"enabled": True}), "bf16.enabled=True.*train.precision"),
    ([], Launch("ddp", mixed_precision="bf16"), "mixed_precision=bf16 but train.precision=fp32"),
])
def test_combinations_that_cannot_work_fail_with_the_key_named(overrides, launch, message):
    with pytest.raises(ConfigError, match=message):
        check_launch(compose_config("recipe=tiny/dpo", *overrides), 2, launch)


def test_fsdp_on_cpu_needs_a_process_group_and_fsdp2():
    cfg = compose_config("recipe=tiny/dpo", "train.per_device_batch_size=8")
    with pytest.raises(ConfigError, match="FSDP on CPU shards the model over two or more processes, and this run has 1"):
        check_launch(cfg, 1, Launch("fsdp"))
    assert check_launch(compose_config("recipe=tiny/dpo"), 2, Launch("fsdp")).sharded


def test_launcher_environment_is_read_and_shipped_paths_work_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    environ = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_CONFIG_FILE": "launch/deepspeed/zero3.json"}
    launch = launch_from_env(environ)
    assert launch.kind == "deepspeed" and launch.zero_stage == 3 and launch.sharded
    assert Path(environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"]).is_absolute(), "anchored for accelerate"
    assert launch_from_env({"ACCELERATE_USE_FSDP": "true"}).sharded
    assert launch_from_env({"ACCELERATE_USE_FSDP": "true", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true"}).fsdp == {
        "cpu_ram_efficient_loading": True}
    assert launch_from_env({"WORLD_SIZE": "2"}).kind == "ddp" and launch_from_env({}).kind == "plain"
    with pytest.raises(ConfigError, match="ACCELERATE_DEEPSPEED_CONFIG_FILE: DeepSpeed config 'nope.json'"):
        launch_from_env({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_CONFIG_FILE": "nope.json"})


# --------------------------------------------------------------------------- SLURM


def align_launch(*args: str, cwd: Path, **extra) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "align_train.cli.launch", *args], cwd=cwd, timeout=120, **extra)


def test_sbatch_script_for_two_nodes(tmp_path):
    out = align_launch("slurm", "recipe=tiny/dpo", "nodes=2", "gpus_per_node=8", "train.global_batch_size=128",
                       "accelerate_config=launch/accelerate/deepspeed_zero3.yaml", "partition=gpu",
                       "objective.loss_type=[sigmoid,sft]", "objective.loss_weights=[1.0,0.2]", "--dry-run",
                       cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    script = out.stdout
    (tmp_path / "job.sbatch").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "job.sbatch")]).returncode == 0
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --requeue", "#SBATCH --signal=USR1@300", "#SBATCH --partition=gpu",
                 "#SBATCH --output=runs/tiny-dpo/slurm-logs/%x-%j.out",
                 "NUM_PROCESSES=$((NODES * GPUS_PER_NODE))",
                 'MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)',
                 '--machine_rank "$SLURM_NODEID"', '--num_machines "$NODES" --num_processes "$NUM_PROCESSES"',
                 '--config_file "$ACCELERATE_CONFIG"',
                 '--main_process_ip "$MAIN_ADDR" --main_process_port "$MAIN_PORT"'):
        assert line in script, line
    assert "deepspeed_zero3.yaml" in script and "{{" not in script
    assert ("'objective.loss_type=[sigmoid,sft]'" in script and 'output_dir=runs/tiny-dpo/slurm-"${SLURM_JOB_ID}"'
            in script and script.rstrip().endswith('-m align_train "${ALIGN_ARGS[@]}"') and "resume=true)" in script)


def test_align_launch_checks_the_run_for_the_job_before_submitting(tmp_path):
    out = align_launch("slurm", "recipe=tiny/dpo", "nodes=2", "gpus_per_node=8", "--dry-run", cwd=tmp_path)
    assert out.returncode == 2 and "train.global_batch_size=16 is not divisible" in out.stderr and "x 16" in out.stderr
    out = align_launch("slurm", "recipe=tiny/dpo", "nodes=2", "gpus_per_node=8", "train.global_batch_size=128",
                       "tuning=lora", "tuning.save_merged=true", "accelerate_config=launch/accelerate/fsdp.yaml",
                       "--dry-run", cwd=tmp_path)
    assert out.returncode == 2 and "tuning.save_merged=true cannot work under fsdp" in out.stderr


STAND_INS = {
    # srun: the command once per node (--nodes=N), all on this machine, each in its own session (a "job step"),
    # with SLURM_NODEID / SLURM_PROCID set as SLURM sets them; the task pids are recorded.
    "srun": """#!/bin/bash
nodes=1
while [[ "$1" == --* ]]; do case "$1" in --nodes=*) nodes="${1#--nodes=}";; esac; shift; done
pids=()
for ((i = 0; i < nodes; i++)); do
  SLURM_NODEID=$i SLURM_PROCID=$i SLURM_LOCALID=0 setsid "$@" &
  pids+=($!)
  echo $! >> "$FAKE_SLURM/step.pids"
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
""",
    "scontrol": """#!/bin/bash
echo "$@" >> "$FAKE_SLURM/scontrol.log"
if [ "$1 $2" = "show hostnames" ]; then echo localhost; fi
""",
    "sbatch": """#!/bin/bash
cp "$1" "$FAKE_SLURM/submitted.sbatch"; echo "Submitted batch job 4242"
""",
}


def test_usr1_checkpoints_requeues_and_the_requeued_job_ends_like_an_uninterrupted_run(tmp_path, ddp_run):
    import psutil

    fake = tmp_path / "slurm"
    (fake / "bin").mkdir(parents=True)
    for name, text in STAND_INS.items():
        (fake / "bin" / name).write_text(text)
        (fake / "bin" / name).chmod(0o755)
    job_env = {"PATH": f"{fake / 'bin'}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM": str(fake),
               "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "localhost"}
    # Two "nodes" of one process each: the machine rank and main address wiring of a multi-node job.
    out = align_launch("slurm", *RUN, "nodes=2", "gpus_per_node=1", "main_port=29533",
                       "accelerate_config=launch/accelerate/cpu_multiprocess.yaml", cwd=tmp_path, **job_env)
    assert out.returncode == 0 and "Submitted batch job 4242" in out.stdout, out.stderr[-3000:]
    script = fake / "submitted.sbatch"
    run_dir = tmp_path / "runs" / "tiny-dpo" / "slurm-4242"

    job = subprocess.Popen(["bash", str(script)], cwd=tmp_path, env=env(**job_env),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2) and job.poll() is None:
        assert time.time() < deadline, "the job never started training"
        time.sleep(0.2)
    # What SLURM does at --signal=USR1@...: signal every process of the job step.
    tasks = [psutil.Process(int(pid)) for pid in (fake / "step.pids").read_text().split()]
    assert len(tasks) == 2, "one launcher task per node"
    for process in [p for task in tasks for p in (task, *task.children(recursive=True))]:
        process.send_signal(signal.SIGUSR1)
    log, _ = job.communicate(timeout=300)
    assert job.returncode != 0, "a preempted job does not report success"
    assert "saving a checkpoint at the next step boundary" in log and "requeued" in log, log[-3000:]
    assert "requeue 4242" in (fake / "scontrol.log").read_text()
    assert json.loads((run_dir / "run_info.json").read_text())["world_size"] == 2
    (stopped,) = checkpoints(run_dir)
    stopped_step = int(stopped.name.split("-")[1])
    assert 2 <= stopped_step < STEPS and not (run_dir / "final").exists()
    assert f"align-train: preempted: a signal arrived; saved {stopped} after step {stopped_step}" in log

    # SLURM runs the requeued job's script again, with the same job id.
    rerun = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env(**job_env), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    assert re.search(rf"resuming from \S*{stopped.name}", rerun.stdout + rerun.stderr)
    assert max_difference(final_weights(run_dir), final_weights(ddp_run[0])) < 1e-6


# --------------------------------------------------------------------------- checkpoints and faults


def test_kill_during_a_checkpoint_leaves_the_previous_one_for_resume(tmp_path):
    steps = ["recipe=tiny/dpo", "train.max_steps=4", "train.save_steps=2", "eval=none",
             "data.max_eval_rows=16", f"output_dir={tmp_path}"]
    out = run([sys.executable, PROBE, *steps], cwd=tmp_path, ALIGN_TRAIN_PROBE_KILL_AT="4")
    assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
    partial = tmp_path / "checkpoint-4"
    # Everything but the end of trainer_state.json is there: the old rule (trainer state + weights) took it.
    assert (partial / "model.safetensors").is_file() and (partial / "trainer_state.json").is_file()
    # Named explicitly, the checkpoint is still refused: its trainer state is cut short (the marker is missing too).
    assert "trainer_state.json" in checkpoint_problem(partial, marked=False)
    assert not is_complete_checkpoint(partial) and not (partial / COMPLETE_MARKER).exists()
    assert (tmp_path / "checkpoint-2" / COMPLETE_MARKER).is_file()
    assert resolve_resume(True, tmp_path) == str(tmp_path / "checkpoint-2")
    result = run_recipe(tmp_path, *steps[:-1], "resume=true")
    assert result.resumed_from == str(tmp_path / "checkpoint-2") and result.steps == 4
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-4"]


@pytest.fixture
def nan_at_step_3(monkeypatch):
    """The DPO loss of every micro-batch of optimizer step 3 is NaN."""
    from trl import DPOTrainer

    inner = DPOTrainer.compute_loss

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        result = inner(self, model, inputs, return_outputs=return_outputs, **kwargs)
        if self.state.global_step + 1 != 3:
            return result
        if return_outputs:
            return result[0] * float("nan"), result[1]
        return result * float("nan")

    monkeypatch.setattr(DPOTrainer, "compute_loss", compute_loss)


NAN_RUN = ["recipe=tiny/dpo", "train.max_steps=4", "train.save_steps=2", "eval=none",
           "data.max_eval_rows=16", "train.logging_steps=1"]


def test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path, nan_at_step_3):
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at step 3 \(loss nan\); the last good checkpoint is "
                       + str(tmp_path / "checkpoint-2")):
        run_recipe(tmp_path, *NAN_RUN)
    assert not (tmp_path / "checkpoint-4").exists() and not (tmp_path / "final").exists()


def test_nan_loss_steps_are_skipped_when_configured(tmp_path, nan_at_step_3, capsys):
    result = run_recipe(tmp_path, *NAN_RUN, "train.skip_nonfinite_steps=true", "train.save_steps=1",
                        "train.save_total_limit=null")
    assert result.steps == 4 and "step 3: non-finite loss, step skipped" in capsys.readouterr().err

    def weights(step):
        return load_file(str(tmp_path / f"checkpoint-{step}" / "model.safetensors"))

    assert all(torch.isfinite(w).all() for w in final_weights(tmp_path).values())
    assert max_difference(weights(2), weights(3)) == 0, "the skipped step moved nothing"
    assert max_difference(weights(3), weights(4)) > 0, "the run went on training"


# --------------------------------------------------------------------------- sweeps on SLURM


def test_submitit_sweep_launcher_composes(tmp_path):
    config = OmegaConf.load(PROJECT_ROOT / "conf" / "hydra" / "launcher" / "slurm.yaml")
    assert config.signal_delay_s > 0 and config.gpus_per_node == 1
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    out = run([sys.executable, "-m", "align_train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
               "--cfg", "hydra"], cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    launcher = OmegaConf.create(out.stdout).hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.signal_delay_s == 300 and launcher.max_num_timeout == 5


def test_the_zero3_recipe_validates_under_its_launch_config_on_eight_gpus():
    from align_train.train import validate_config

    launch = launch_from_accelerate_config("launch/accelerate/deepspeed_zero3.yaml")
    validate_config(compose_config("recipe=llama3.1/dpo-full-8b-zero3"), 8, launch=launch)
    with pytest.raises(ConfigError, match="not divisible"):
        validate_config(compose_config("recipe=llama3.1/dpo-full-8b-zero3"), 24, launch=launch)


def test_sigterm_outside_slurm_checkpoints_stops_with_code_75_and_resumes(tmp_path, monkeypatch):
    from align_train.preemption import PREEMPTED_EXIT_CODE, Preempted
    from align_train.tracking import JsonlMetricsCallback

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    inner = JsonlMetricsCallback.on_log

    def on_log(self, args, state, control, logs=None, **kwargs):
        inner(self, args, state, control, logs=logs, **kwargs)
        if state.global_step == 2 and not getattr(self, "sent", False):
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler ending the job would

    monkeypatch.setattr(JsonlMetricsCallback, "on_log", on_log)
    steps = ["recipe=tiny/dpo", "train.max_steps=4", "eval=none", "data.max_eval_rows=16",
             "train.logging_steps=1"]
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted, match=r"saved .*checkpoint-3 after step 3 and stopped\. Run again with resume=true"
                       ) as stopped:
        run_recipe(tmp_path, *steps)
    assert stopped.value.exit_code == PREEMPTED_EXIT_CODE
    assert signal.getsignal(signal.SIGTERM) is previous, "the handler is given back"
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-3"] and not (tmp_path / "final").exists()
    result = run_recipe(tmp_path, *steps, "resume=true")
    assert result.resumed_from == str(tmp_path / "checkpoint-3") and result.steps == 4
