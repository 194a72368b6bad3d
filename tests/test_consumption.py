"""No setting is recorded and ignored: every leaf of every schema, changed, changes what reaches a consumer.

The leaves are enumerated from the schemas themselves (a new field is tested without being listed), and
each is changed to another valid value (derived from its type and declared bound, or from VARIANTS). The
test then looks at what the run hands the libraries and its own parts: the TRL config object, the peft
config, what the data loader returns, the arguments the model and tokenizer loaders receive, the
evaluator's results and its calls into the model, NeST's probe and selection, BCO's UDM weights, the
callbacks' behaviour, the tracker's environment, the run directory plan, a pipeline's stages. A leaf
passes when one of its consumers sees a difference (an error counts: the value reached the consumer).
A schema used at several places (a prompt set, a generation suite) is tested once per field; every
suite's ``enabled`` is tested on its own. BOOKKEEPING lists the fields that steer nothing, with why.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import typing
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from align_train import config as schema
from align_train.paths import PROJECT_ROOT
from align_train.run_dir import RunDir
from tests.conftest import compose_config

TINY = str(PROJECT_ROOT / "data" / "tiny-llama")
BAD_ROWS = str(Path(__file__).parent / "data" / "preference_with_bad_row.jsonl")
# Unpaired feedback whose desirable and undesirable rows come from different prompts (UDM has a shift to fit).
SHIFTED = str(Path(__file__).parent / "data" / "feedback_shifted.jsonl")

# Fields that steer nothing by design. Each entry says why.
BOOKKEEPING: dict[str, str] = {}

# Where a schema is mounted and the overrides that make the field matter there.
CONTEXTS = {
    "": ["recipe=tiny/dpo"],
    "objective@dpo": ["recipe=tiny/dpo"],
    "objective@sft": ["recipe=tiny/sft", "eval=none"],
    "objective@kto": ["recipe=tiny/kto"],
    "objective@bco": ["recipe=tiny/bco", "objective.udm.enabled=true", "objective.udm.min_prompts=4",
                      "data=tiny_feedback", f"data.train.tiny_feedback.path={SHIFTED}"],
    "objective@midtrain": ["objective=midtrain", "data=tiny_documents"],
    "objective@simpo": ["recipe=tiny/simpo"],
    "objective@orpo": ["recipe=tiny/orpo"],
    "objective@cpo": ["recipe=tiny/cpo"],
    "tuning@full": ["recipe=tiny/dpo"],
    "tuning@lora": ["recipe=tiny/dpo", "tuning=lora"],
    "tuning@freeze": ["recipe=tiny/dpo", "tuning=freeze", "tuning.trainable=[layers\\.1\\.mlp]"],
    "tuning@nest": ["recipe=tiny/nest"],
}
NOWHERE = "http://127.0.0.1:9/v1"  # no judge server listens there: naming it must fail before generation
EVAL_CONTEXT = ["recipe=tiny/dpo", "eval=tiny", "eval.refusal.prompts.max_prompts=4",
                "eval.over_refusal.prompts.max_prompts=4", "eval.refusal.generation.max_new_tokens=4",
                "eval.over_refusal.generation.max_new_tokens=4", "eval.preference.max_examples=4",
                "eval.perplexity.max_examples=4", "eval.latent_separation.safe.max_prompts=6",
                "eval.latent_separation.unsafe.max_prompts=6", "eval.samples=2",
                "eval.latent_robustness.prompts.max_prompts=3", "eval.latent_robustness.generation.max_new_tokens=4",
                "eval.latent_robustness.layers=[1]", "eval.branching_factor.prompts.max_prompts=3",
                "eval.branching_factor.generation.max_new_tokens=4"]

# Extra context for a leaf (prefix match): what makes the field matter.
LEAF_CONTEXT = {
    "data.skip_invalid_rows": [f"data.train.tiny_preference.path={BAD_ROWS}"],
    "data.train.tiny_preference.split": ["data.train.tiny_preference.path=org/hub-dataset"],
    "data.train.tiny_preference.subset": ["data.train.tiny_preference.path=org/hub-dataset"],
    # the bundled set makes way for a source of the user's own, unless it is no longer marked fallback
    "data.train.tiny_preference.fallback": [
        "++data.train={mine:{path:" + str(PROJECT_ROOT / "data/examples/preference_conversational.jsonl") + "}}"],
    "data.hub_mirror": ["data.train.tiny_preference.path=org/hub-dataset"],
    "eval.": EVAL_CONTEXT,
    "eval.refusal.generation.temperature": ["eval.refusal.generation.do_sample=true"],
    "eval.refusal.generation.top_p": ["eval.refusal.generation.do_sample=true"],
    "eval.refusal.judge.batch_size": ["eval.refusal.judge.name=llm", f"eval.refusal.judge.model={TINY}"],
    "eval.preference.skip_without_data": ["data.eval_fraction=0"],
    "eval.refusal.judge.prompt_template": ["eval.refusal.judge.name=llm", f"eval.refusal.judge.model={TINY}"],
    "eval.refusal.judge.model": ["eval.refusal.judge.name=llm", f"eval.refusal.judge.model={TINY}"],
    "eval.refusal.judge.preset": ["eval.refusal.judge.name=llm", f"eval.refusal.judge.model={TINY}"],
    "eval.refusal.judge.server_url": ["eval.refusal.judge.name=llm", f"eval.refusal.judge.model={TINY}"],
    "eval.refusal.judge.api_key_env": ["eval.refusal.judge.name=llm", "eval.refusal.judge.model=m",
                                       f"eval.refusal.judge.server_url={NOWHERE}"],
    "eval.refusal.judge.refusal_labels": ["eval.refusal.judge.name=classifier", "eval.refusal.judge.model=CLASSIFIER"],
    "eval.refusal.prompts.split": ["eval.refusal.prompts.path=org/hub-prompts"],
    "eval.refusal.prompts.subset": ["eval.refusal.prompts.path=org/hub-prompts"],
    "logger.": ["logger=wandb"],
    "hub.": ["hub.push=true", "hub.repo_id=user/model"],
    "train.latent_perturbation.": ["train.latent_perturbation.layers=[1]"],
    "tuning.harmful.split": ["tuning.harmful.path=org/hub-prompts", "tuning.harmful.column=prompt"],
    "tuning.harmful.subset": ["tuning.harmful.path=org/hub-prompts", "tuning.harmful.column=prompt"],
    "resume": ["output_dir=FINISHED"],
    "objective.ref_cache": ["objective.precompute_ref_log_probs=true"],
    "stages": ["recipe=tiny/msm_pipeline"],
}

# Another valid value, where the type and bound do not give one (override syntax).
VARIANTS = {
    "model.name_or_path": "/elsewhere/model",
    "model.tokenizer": "/elsewhere/tokenizer",
    "model.revision": "v2",
    "model.init": "random",
    "model.dtype": "bfloat16",
    "model.attn_implementation": "eager",
    "model.chat_template": "chatml",
    "model.quantization": "nf4",
    "data.train": "{extra:{path:" + str(PROJECT_ROOT / "data/examples/preference.jsonl") + "}}",
    "data.eval": "{held:{path:" + str(PROJECT_ROOT / "data/examples/preference.jsonl") + "}}",
    "data.train.tiny_preference.path": str(PROJECT_ROOT / "data/examples/preference.jsonl"),
    "data.train.tiny_preference.format": "feedback",
    "data.train.tiny_preference.split": "test",
    "data.train.tiny_preference.subset": "other",
    "data.train.tiny_preference.columns": "{chosen:rejected,rejected:chosen}",
    "data.max_eval_rows": "5",
    "data.hub_mirror": "/elsewhere/mirror",
    "objective.loss_type": "[hinge]",
    "objective.loss_weights": "[0.5]",
    "objective.f_divergence_type": "js_divergence",
    "objective.packing_strategy": "bfd",
    "objective.completion_only_loss": "false",
    "objective.udm.embedding_model": "/elsewhere/encoder",
    "objective.udm.max_prompts": "20",
    "objective.udm.min_prompts": "100000",
    "objective@kto:objective.loss_type": "apo_zero_unpaired",
    "tuning.target_modules": "[q_proj,v_proj]",
    "tuning.bias": "all",
    "tuning.modules_to_save": "[lm_head]",
    "tuning.trainable": "[layers\\.0\\.self_attn]",
    "tuning.selection": "random",
    "tuning.weights": "[down,up]",
    "tuning.max_neurons_per_layer": "2",
    "tuning.harmful.path": str(PROJECT_ROOT / "data/tiny/eval_prompts.jsonl"),
    "tuning.harmful.column": "prompt",
    "tuning.harmful.where": "{category:benign}",
    "tuning.harmful.max_prompts": "20",
    "tuning.harmful.split": "test",
    "tuning.harmful.subset": "other",
    "train.lr_scheduler": "linear",
    "train.optim": "sgd",
    "train.precision": "bf16",
    "train.eval_batch_size": "3",
    "train.max_steps": "7",
    "train.latent_perturbation.layers": "[2]",
    "train.trainer_kwargs": "{truncation_mode:keep_end}",
    "logger.name": "none",
    "logger.project": "other-project",
    "logger.entity": "team",
    "logger.mode": "disabled",
    "logger.tags": "[a,b]",
    "hub.repo_id": "user/other",
    "hub.revision": "v2",
    "hub.license": "mit",
    "hub.tags": "[safety]",
    "eval.refusal.prompts.path": str(PROJECT_ROOT / "data/tiny/sft.jsonl"),
    "eval.refusal.prompts.column": "messages",
    "eval.refusal.prompts.where": "{type:borderline}",
    "eval.refusal.prompts.split": "test",
    "eval.refusal.prompts.subset": "other",
    "eval.refusal.prompts.max_prompts": "3",
    "eval.refusal.generation.system_prompt": "'Be brief.'",
    "eval.refusal.judge.name": "llm",
    "eval.refusal.judge.model": TINY + "/.",
    "eval.refusal.judge.batch_size": "2",
    "eval.refusal.judge.preset": "xstest",
    "eval.refusal.judge.server_url": NOWHERE,
    "eval.refusal.judge.api_key_env": "ALIGN_TRAIN_UNSET_JUDGE_KEY",
    "eval.refusal.generation.batch_size": "2",
    "eval.refusal.generation.backend": "vllm",  # refused here, naming the reason (no GPU, no vLLM)
    "eval.preference.batch_size": "3",
    "eval.latent_separation.batch_size": "4",
    "eval.refusal.judge.refusal_labels": "[normal]",
    "eval.refusal.judge.prompt_template": "'Did it refuse? {prompt} / {response}'",
    "eval.preference.path": str(PROJECT_ROOT / "data/examples/preference.jsonl"),
    "eval.latent_separation.layers": "[1]",
    "eval.latent_separation.pooling": "last",
    "eval.latent_robustness.layers": "[2]",
    "eval.latent_robustness.batch_size": "2",
    "run_name": "another-name",
    "output_dir": "/elsewhere/run",
    "resume": "true",
    "stages": "[{name:only,overrides:['objective=midtrain','data=tiny_documents']}]",
    "stages[0].name": "renamed",
    "stages[0].overrides": "['objective=midtrain','data=msm_documents','train.learning_rate=5e-4']",
}


# --------------------------------------------------------------------------- the leaves


@dataclasses.dataclass(frozen=True)
class Leaf:
    path: str  # override key, e.g. objective.beta
    context: str  # key of CONTEXTS
    hint: typing.Any
    meta: tuple  # field metadata items
    schema: type
    name: str


def _unwrap(hint):
    if typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def _walk(cls, prefix: str, context: str, seen: set, out: list) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint, _ = _unwrap(hints[f.name])
        path = f"{prefix}{f.name}"
        if path in ("objective", "tuning"):
            registry = schema.OBJECTIVE_SCHEMAS if path == "objective" else schema.TUNING_SCHEMAS
            for name, sub in registry.items():
                _walk(sub, f"{path}.", f"{path}@{name}", seen, out)
            continue
        if dataclasses.is_dataclass(hint):
            _walk(hint, f"{path}.", context, seen, out)
            continue
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (dict, typing.Dict) and args and dataclasses.is_dataclass(args[1]):
            out.append(Leaf(path, context, hint, tuple(f.metadata.items()), cls, f.name))
            if path == "data.train":
                _walk(args[1], f"{path}.tiny_preference.", context, seen, out)
            continue
        if origin in (list, typing.List) and args and dataclasses.is_dataclass(args[0]):
            out.append(Leaf(path, "", hint, tuple(f.metadata.items()), cls, f.name))
            _walk(args[0], f"{path}[0].", "", seen, out)
            continue
        key = (cls, f.name)
        if key in seen and f.name != "enabled":  # a schema mounted twice: its fields are tested once
            continue
        seen.add(key)
        out.append(Leaf(path, context, hints[f.name], tuple(f.metadata.items()), cls, f.name))


def all_leaves() -> list[Leaf]:
    out: list[Leaf] = []
    _walk(schema.AlignConfig, "", "", set(), out)
    return out


LEAVES = all_leaves()


def _override_key(path: str) -> str:
    return path.replace("[0]", ".0")


def variant(leaf: Leaf, value) -> str:
    """Another valid value for the leaf, as an override value."""
    for key in (f"{leaf.context}:{leaf.path}", leaf.path):
        if key in VARIANTS:
            return VARIANTS[key]
    hint, _ = _unwrap(leaf.hint)
    bound = dict(leaf.meta).get("bound")
    if hint is bool:
        return str(not value).lower()
    if hint in (int, float):
        base = value if value is not None else 1
        candidates = [base // 2 if hint is int else base * 0.5, base + 1, base - 1, 3, 2, 0.3, 0.7]
        for c in candidates:
            c = int(c) if hint is int else float(c)
            if c != value and (bound is None or bound.accepts(c)) and math.isfinite(c):
                return repr(c)
    if leaf.name == "name" and leaf.context.startswith(("objective@", "tuning@")):
        return "SELECTOR"
    raise AssertionError(f"{leaf.path}: add a variant to VARIANTS (type {leaf.hint})")


def config_for(leaf: Leaf, changed: bool, finished: Path, classifier: str):
    overrides = list(CONTEXTS.get(leaf.context, CONTEXTS[""]) if leaf.context else CONTEXTS[""])
    for prefix, extra in LEAF_CONTEXT.items():
        if leaf.path.startswith(prefix):
            overrides += extra
    overrides = [o.replace("FINISHED", str(finished)).replace("CLASSIFIER", classifier) for o in overrides]
    if changed:
        cfg = compose_config(*overrides)
        current = OmegaConf.select(cfg, leaf.path.replace("[0]", ".0"))
        if isinstance(current, (OmegaConf.__class__,)):
            current = None
        plain = OmegaConf.to_container(current) if OmegaConf.is_config(current) else current
        value = variant(leaf, plain)
        key = _override_key(leaf.path)
        if value == "SELECTOR":
            return ("selector", leaf.path, overrides)
        current_node = OmegaConf.select(cfg, key, default="__missing__")
        prefix = "++" if current_node == "__missing__" or isinstance(current_node, dict) or (
            OmegaConf.is_dict(current_node)) else ""
        overrides.append(f"{prefix}{key}={value}")
    return compose_config(*overrides, output_dir=None)


# --------------------------------------------------------------------------- consumers


@pytest.fixture(scope="module")
def tiny():
    from align_train.models import load_model, load_tokenizer

    cfg = compose_config().model
    model = load_model(cfg).eval()
    return model, load_tokenizer(cfg)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from tests.conftest import run_recipe

    out = tmp_path_factory.mktemp("finished") / "run"
    run_recipe(out, "recipe=tiny/dpo", "train.max_steps=2", "train.save_steps=2", "eval=none",
               "data.max_eval_rows=8")
    return out


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(TINY)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                        id2label={0: "normal", 1: "refusal"}, label2id={"normal": 0, "refusal": 1})
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("classifier")
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _plain(value):
    """A JSON-able fingerprint of anything a consumer returned."""
    if isinstance(value, torch.Tensor):
        return [list(value.shape), hash(value.detach().cpu().numpy().tobytes())]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


class Hub:
    """A stand-in for datasets.load_dataset on hub names: records what it was asked, returns small tables."""

    def __init__(self):
        self.calls = []

    def __call__(self, name, subset=None, split=None, **kwargs):
        import datasets

        self.calls.append((name, subset, split, sorted(kwargs)))
        if name in ("json", "csv", "parquet"):
            return real_load_dataset(name, subset, split=split, **kwargs)
        rows = [{"prompt": f"question {i} {subset} {split}", "chosen": f"good {i}", "rejected": f"bad {i}",
                 "label": "harmful", "category": "harmful", "type": "harmful"} for i in range(40)]
        return datasets.Dataset.from_list(rows)


import datasets as _datasets  # noqa: E402

real_load_dataset = _datasets.load_dataset


def observe_trl(cfg, env):
    from align_train.objectives import make_objective
    from align_train.training_args import common_trainer_args

    objective = make_objective(cfg.objective)
    args = objective.make_args(common_trainer_args(cfg, cfg.output_dir, 1),
                               SimpleNamespace(format=objective.accepts[0]))
    return args.to_dict()


def observe_logprobs(cfg, env):
    """How the objective's trainer reads log-probs: the head installed on policy and reference."""
    from align_train.objectives import make_objective

    from align_train.objectives import base

    objective = make_objective(cfg.objective)
    head = objective.logprob_head()
    grouped = []
    env["monkeypatch"].setattr(base, "group_by_length", grouped.append)
    trainer = SimpleNamespace(model=copy.deepcopy(env["tiny"][0]), ref_model=None)
    objective.trainer_class_for = lambda args: (lambda **kwargs: trainer)
    objective.build_trainer(trainer.model, None, None, SimpleNamespace(train=None, eval=None, report={}), None, [])
    return {"head": None if head is None else dataclasses.asdict(head), "grouped": len(grouped),
            "installed": str(getattr(trainer.model, "_align_train_logprob_head", None))}


def observe_peft(cfg, env):
    from align_train.tuning import make_tuning

    tuning = make_tuning(cfg.tuning)
    return tuning.peft_config().to_dict() if hasattr(tuning, "peft_config") else None


def observe_data(cfg, env):
    from align_train.data import load_data
    from align_train.objectives import make_objective

    objective = make_objective(cfg.objective)
    env["monkeypatch"].setattr(_datasets, "load_dataset", env["hub"])
    bundle = load_data(cfg.data, objective.accepts, objective.name)
    return {"train": bundle.train.to_list(), "eval": bundle.eval.to_list() if bundle.eval is not None else None,
            "report": bundle.report, "hub": env["hub"].calls}


def observe_loss(cfg, env):
    """A custom-loss objective's loss on fixed log-probabilities (None for objectives with TRL's own loss)."""
    from align_train.objectives import make_objective
    from align_train.objectives.losses import LossContext, PairedLogps, PairedLoss

    loss = make_objective(cfg.objective).trainer_init_kwargs(SimpleNamespace(report={})).get("loss")
    if not isinstance(loss, PairedLoss):
        return None
    batch = PairedLogps(torch.tensor([-12.0, -30.0]), torch.tensor([-15.0, -25.0]), torch.tensor([6, 10]),
                        torch.tensor([5, 10]), chosen_nll=torch.tensor(1.7))
    return loss(batch, LossContext(True, None))[0].item()


def observe_loading(cfg, env):
    import transformers

    from align_train.models import load_model, load_tokenizer

    calls = []

    def recorder(name):
        def record(*args, **kwargs):
            calls.append((name, [str(a) for a in args], {k: str(v) for k, v in sorted(kwargs.items())}))
            if name == "tokenizer":
                return SimpleNamespace(pad_token="x", eos_token="x")
            return SimpleNamespace()
        return record

    mp = env["monkeypatch"]
    mp.setattr(transformers.AutoTokenizer, "from_pretrained", recorder("tokenizer"))
    mp.setattr(transformers.AutoModelForCausalLM, "from_pretrained", recorder("model"))
    mp.setattr(transformers.AutoModelForCausalLM, "from_config", recorder("from_config"))
    mp.setattr(transformers.AutoConfig, "from_pretrained", recorder("config"))
    import align_train.models as models

    for name in ("AutoTokenizer", "AutoModelForCausalLM", "AutoConfig"):
        mp.setattr(models, name, getattr(transformers, name))
    load_tokenizer(cfg.model)
    load_model(cfg.model)
    return calls


def _call_log(model, env):
    """Record every forward (input shape and keyword names) and generate (kwargs) the model receives."""
    calls = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(("forward", list((kwargs.get("input_ids", args[0] if args else
                                                                                 None)).shape))), with_kwargs=True)
    env["handles"].append(handle)
    if not hasattr(model, "generate"):
        return calls
    generate = model.generate

    def recording_generate(*args, **kwargs):
        calls.append(("generate", list(kwargs["input_ids"].shape),
                      {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}))
        return generate(*args, **kwargs)

    env["monkeypatch"].setattr(model, "generate", recording_generate)
    return calls


def observe_eval(cfg, env):
    from align_train.data import load_data
    from align_train.evaluation.evaluator import Evaluator
    from align_train.objectives import make_objective

    if not cfg.eval.enabled:
        return "eval disabled"
    env["monkeypatch"].setattr(_datasets, "load_dataset", env["hub"])
    objective = make_objective(cfg.objective)
    heldout = load_data(cfg.data, objective.accepts, objective.name).heldout
    out = env["tmp"] / f"eval-{len(list(env['tmp'].iterdir()))}"
    evaluator = Evaluator(cfg.eval, out, heldout=heldout, max_length=cfg.model.max_length)
    model, tokenizer = env["tiny"]
    calls = _call_log(model, env)
    for judge in evaluator.ctx._judges.values():  # a model judge's own calls (its batches, its prompts)
        if hasattr(judge, "model"):
            calls.append(("judge", _call_log(judge.model, env)))
    record = evaluator.evaluate(model, tokenizer, 1, label="model")
    record.pop("seconds", None)
    for suite in record.get("suites", {}).values():
        suite.get("details", {}).pop("seconds", None)
    return {"record": record, "calls": calls, "hub": env["hub"].calls}


def observe_eval_failure(cfg, env):
    """The evaluator with a model that fails: strict stops, otherwise the error is recorded."""
    from align_train.data import load_data
    from align_train.evaluation.evaluator import Evaluator
    from align_train.objectives import make_objective

    objective = make_objective(cfg.objective)
    heldout = load_data(cfg.data, objective.accepts, objective.name).heldout
    evaluator = Evaluator(cfg.eval, env["tmp"] / "failing", heldout=heldout, max_length=32)

    class Broken(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise RuntimeError("broken model")

        def generate(self, *args, **kwargs):
            raise RuntimeError("broken model")

    broken = Broken()
    broken.register_parameter("p", torch.nn.Parameter(torch.zeros(1)))
    return sorted(evaluator.evaluate(broken, env["tiny"][1], 1)["errors"])


def observe_hook(cfg, env):
    from align_train.evaluation.hook import EvaluationCallback

    scored = []

    class Recorder:
        def __init__(self, eval_cfg):
            self.cfg = eval_cfg

        def scored_steps(self):
            return set()

        def evaluate(self, model, tokenizer, step, **kwargs):
            scored.append(step)
            return {"errors": {}}

    hook = EvaluationCallback(Recorder(cfg.eval), None, env["tmp"] / "metrics.jsonl")
    for event, step in (("on_train_begin", 0), ("on_save", 2), ("on_train_end", 4)):
        state = SimpleNamespace(global_step=step, is_world_process_zero=True, epoch=0.0)
        getattr(hook, event)(None, state, None, model=None)
    return scored


def observe_built_evaluator(cfg, env):
    from align_train.data import load_data
    from align_train.objectives import make_objective
    from align_train.train import make_evaluator

    objective = make_objective(cfg.objective)
    heldout = load_data(cfg.data, objective.accepts, objective.name).heldout
    evaluator = make_evaluator(cfg, env["tmp"], heldout)
    return None if evaluator is None else [type(s).__name__ for s in evaluator.suites]


def observe_callbacks(cfg, env):
    """The checkpoint marker's rotation and the non-finite guard, by what they do."""
    from align_train.run_dir import COMPLETE_MARKER, rotate
    from align_train.train import make_guard, training_callbacks

    callbacks, _ = training_callbacks(cfg, env["tmp"])
    marker = next(c for c in callbacks if type(c).__name__ == "CheckpointMarker")
    root = env["tmp"] / f"ckpt-{len(list(env['tmp'].iterdir()))}"
    for step in (1, 2, 3, 4):
        path = root / f"checkpoint-{step}"
        path.mkdir(parents=True)
        (path / "trainer_state.json").write_text("{}")
        (path / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
        (path / COMPLETE_MARKER).write_text("{}")
    rotate(root, marker.keep)
    kept = sorted(p.name for p in root.glob("checkpoint-*"))
    guard = make_guard(cfg, env["tmp"])
    guard.bad_value = float("nan")
    parameter = torch.nn.Parameter(torch.ones(1))
    parameter.grad = torch.ones(1)
    try:
        guard.on_pre_optimizer_step(None, SimpleNamespace(global_step=1, is_world_process_zero=False), None,
                                    model=SimpleNamespace(parameters=lambda: [parameter]))
        outcome = f"skipped, gradient {parameter.grad}"
    except Exception as err:
        outcome = type(err).__name__
    return {"kept": kept, "guard": outcome}


def observe_logger(cfg, env):
    from align_train.tracking import configure_logger

    keys = [k for k in os.environ if k.startswith("WANDB_")]
    saved = {k: os.environ[k] for k in keys}
    try:
        for key in keys:
            del os.environ[key]
        configure_logger(cfg.logger, env["tmp"])
        return {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
    finally:
        for key in [k for k in os.environ if k.startswith("WANDB_")]:
            del os.environ[key]
        os.environ.update(saved)


def observe_hub(cfg, env):
    """What the end of a run pushes (a recording stand-in for HfApi) and the model card's metadata."""
    from huggingface_hub import constants

    from align_train.hub import check_hub, publish
    from align_train.model_card import card_text
    from align_train.run_dir import COMPLETE_MARKER

    env["monkeypatch"].setattr(constants, "HF_HUB_OFFLINE", False)
    run = RunDir(env["tmp"] / f"hub-{len(list(env['tmp'].iterdir()))}")
    for folder in (run.final, run.checkpoint(2)):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    (run.checkpoint(2) / "trainer_state.json").write_text("{}")
    (run.checkpoint(2) / COMPLETE_MARKER).write_text("{}")
    OmegaConf.save(cfg, run.config)
    run.summary.write_text(json.dumps({"steps": 2, "recipe": "r", "objective": "dpo", "tuning": "full"}))
    calls = []

    class Recorder:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def create_branch(self, repo_id, **kwargs):
            calls.append(("create_branch", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload", Path(kwargs["folder_path"]).name, kwargs["path_in_repo"], kwargs["revision"]))
            return "url"

    check_hub(cfg.hub)
    return {"pushed": publish(run, cfg.hub, api=Recorder()), "calls": calls, "card": card_text(run)[:1500]}


def observe_udm(cfg, env):
    from align_train.data import load_data
    from align_train.objectives import make_objective
    from align_train.objectives import udm as udm_module

    calls = []

    def embed(model, tokenizer, prompts, batch_size, use_chat_template):
        calls.append(("embed", len(prompts), batch_size, use_chat_template))
        keys = [p if isinstance(p, str) else json.dumps(p) for p in prompts]
        return torch.stack([torch.randn(8, generator=torch.Generator().manual_seed(zlib.crc32(k.encode())))
                            for k in keys]).numpy()

    def load_encoder(name):
        calls.append(("encoder", name))
        return torch.nn.Linear(1, 1), None

    mp = env["monkeypatch"]
    mp.setattr(udm_module, "embed_prompts", embed)
    mp.setattr(udm_module, "load_embedding_model", load_encoder)
    objective = make_objective(cfg.objective)
    if not cfg.objective.udm.enabled:
        return "udm off"
    data = load_data(cfg.data, objective.accepts, objective.name)
    model, tokenizer = env["tiny"]
    weighted = objective.prepare(model, tokenizer, data, None)
    return {"weights": weighted.train["udm_weight"], "report": weighted.report["udm"], "calls": calls}


def observe_tuning(cfg, env):
    """What the strategy does to the model: trainable parameters, NeST's probe calls and selection."""
    from align_train.tuning import make_tuning
    from align_train.tuning.nest import strategy as nest_strategy

    tuning = make_tuning(cfg.tuning)
    model = copy.deepcopy(env["tiny"][0])
    calls = []
    if cfg.tuning.name == "nest":
        def activations(model, tokenizer, prompts, batch_size, max_length):
            calls.append((len(prompts), batch_size, max_length, zlib.crc32("|".join(prompts).encode())))
            from align_train.tuning.nest.probe import mlp_blocks

            out = []
            for _, block in mlp_blocks(model):
                width = block.down_proj.in_features
                rows = [torch.randn(width, generator=torch.Generator().manual_seed(zlib.crc32(p.encode())))
                        for p in prompts]
                out.append(torch.stack(rows) + (2.0 if "harm" in str(calls) else 0.0))
            return out

        env["monkeypatch"].setattr(nest_strategy, "pooled_activations", activations)
        env["monkeypatch"].setattr(_datasets, "load_dataset", env["hub"])
        tuning.prepare(model, env["tiny"][1], env["tmp"] / f"nest-{len(list(env['tmp'].iterdir()))}")
    try:
        model = tuning.apply(model)
    except Exception as err:  # an error is what reached the strategy
        return repr(err)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    selection = [(s.module, s.neurons.tolist(), s.clusters.tolist()) for s in getattr(tuning, "selection", None) or []]
    return {"trainable": trainable, "calls": calls, "selection": selection}


def observe_saved(cfg, env):
    """LoRA's final save: the adapter alone, or the merged model beside it."""
    from peft import get_peft_model

    from align_train.tuning import make_tuning

    tuning = make_tuning(cfg.tuning)
    if cfg.tuning.name != "lora":
        return None
    model = get_peft_model(copy.deepcopy(env["tiny"][0]), tuning.peft_config())
    run = RunDir(env["tmp"] / f"save-{len(list(env['tmp'].iterdir()))}")
    trainer = SimpleNamespace(save_model=lambda d: Path(d).mkdir(parents=True, exist_ok=True),
                              accelerator=SimpleNamespace(is_main_process=True, unwrap_model=lambda m: m),
                              model=model, processing_class=env["tiny"][1])
    tuning.save_final(trainer, run)
    return sorted(p.name for p in run.root.iterdir())


def observe_ref_cache(cfg, env):
    """The trainer class the objective builds and where it keeps precomputed reference log-probs."""
    from align_train.objectives import make_objective

    trainer_class = make_objective(cfg.objective).trainer_class_for(SimpleNamespace(output_dir=str(env["tmp"] / "run")))
    cache = getattr(trainer_class, "reference_cache", None)
    return {"trainer": trainer_class.__name__, "cache": str(cache.root) if cache is not None else None}


def observe_lapt(cfg, env):
    """LAPT's hooks on the tiny model: the logits of one training forward with them attached."""
    from align_train.tuning.latent_perturbation import latent_perturbation

    model, tokenizer = env["tiny"]
    perturbation = latent_perturbation(cfg.train.latent_perturbation, model)
    if perturbation is None:
        return "off"
    ids = torch.tensor([tokenizer("A short training example.")["input_ids"]])
    model.train()
    try:
        with perturbation:
            return model(input_ids=ids).logits
    finally:
        model.eval()


def observe_plan(cfg, env):
    from align_train.run_dir import plan_start

    start = plan_start(Path(cfg.output_dir), cfg.resume)
    return {"resume_from": start.resume_from, "segment": start.segment}


def observe_stages(cfg, env):
    from align_train.pipeline import compose_stages

    cfg.output_dir = str(env["tmp"] / "pipeline")
    return [(i, stage.name, OmegaConf.to_container(stage_cfg, resolve=True)) for i, stage, stage_cfg in
            compose_stages(cfg, [])]


def observe_selector(path, overrides, env):
    """objective.name / tuning.name pick the plug-in: another name, another class."""
    from align_train.objectives import make_objective
    from align_train.tuning import make_tuning

    cfg = compose_config(*overrides)
    group = path.split(".")[0]
    registry = schema.OBJECTIVE_SCHEMAS if group == "objective" else schema.TUNING_SCHEMAS
    make = make_objective if group == "objective" else make_tuning
    current = getattr(cfg, group).name
    other = next(n for n in registry if n != current)
    return type(make(OmegaConf.create({"name": current}))).__name__, type(
        make(OmegaConf.create({"name": other}))).__name__


OBSERVERS = {
    "trl": observe_trl, "loss": observe_loss, "logprobs": observe_logprobs, "peft": observe_peft, "data": observe_data, "loading": observe_loading,
    "eval": observe_eval, "eval_failure": observe_eval_failure, "hook": observe_hook,
    "evaluator": observe_built_evaluator, "callbacks": observe_callbacks,
    "logger": observe_logger, "hub": observe_hub, "udm": observe_udm, "tuning": observe_tuning, "saved": observe_saved,
    "plan": observe_plan, "stages": observe_stages, "ref_cache": observe_ref_cache, "lapt": observe_lapt,
}
# Which consumers may see a leaf (first match of the path's prefix), cheapest first.
CONSUMERS = [
    ("model.max_length", ["trl", "eval"]),
    ("model.gradient_checkpointing", ["trl"]),
    ("model.", ["loading"]),
    ("data.", ["data"]),
    ("objective.udm.", ["udm"]),
    ("objective.ref_cache", ["ref_cache"]),
    ("objective.chunked_logprobs", ["logprobs"]),
    ("objective.logprob_vocab_chunk", ["logprobs"]),
    ("objective.padding_free", ["logprobs"]),
    ("objective.group_by_length", ["logprobs"]),
    ("objective.", ["trl", "loss", "data"]),
    ("tuning.save_merged", ["saved"]),
    ("tuning.", ["peft", "tuning"]),
    ("train.save_total_limit", ["callbacks"]),
    ("train.skip_nonfinite_steps", ["callbacks"]),
    ("train.latent_perturbation.", ["lapt"]),
    ("train.", ["trl"]),
    ("logger.", ["logger", "trl"]),
    ("hub.", ["hub"]),
    ("eval.enabled", ["evaluator"]),
    ("eval.inline", ["evaluator"]),
    ("eval.baseline", ["hook"]),
    ("eval.on_save", ["hook"]),
    ("eval.at_end", ["hook"]),
    ("eval.strict", ["eval_failure"]),
    ("eval.", ["eval"]),
    ("run_name", ["trl"]),
    ("output_dir", ["trl"]),
    ("resume", ["plan"]),
    ("stages", ["stages"]),
]


def consumers_of(path: str) -> list[str]:
    return next(names for prefix, names in CONSUMERS if path.startswith(prefix))


def _observe(name, cfg, env):
    try:
        return _plain(OBSERVERS[name](cfg, env))
    except Exception as err:  # the value reached the consumer, which refused it: that is consumption too
        return f"error: {type(err).__name__}: {str(err)[:300]}"


@pytest.mark.parametrize("leaf", [leaf for leaf in LEAVES if leaf.path not in BOOKKEEPING],
                         ids=[f"{leaf.context or 'run'}:{leaf.path}" for leaf in LEAVES if leaf.path not in BOOKKEEPING])
def test_every_setting_reaches_a_consumer(leaf, tmp_path, monkeypatch, tiny, finished, classifier):
    env = {"tmp": tmp_path, "monkeypatch": monkeypatch, "tiny": tiny, "hub": Hub(), "handles": []}
    try:
        base = config_for(leaf, False, finished, classifier)
        changed = config_for(leaf, True, finished, classifier)
        if isinstance(changed, tuple):
            first, second = observe_selector(changed[1], changed[2], env)
            assert first != second
            return
        seen = []
        for name in consumers_of(leaf.path):
            before, after = _observe(name, base, env), _observe(name, changed, env)
            if before != after:
                return
            seen.append(f"{name}: {json.dumps(before, default=str)[:300]}")
        raise AssertionError(f"{leaf.path} changed ({variant_text(leaf, base)}) but no consumer saw it:\n  "
                             + "\n  ".join(seen))
    finally:
        for handle in env["handles"]:
            handle.remove()


def variant_text(leaf, cfg) -> str:
    current = OmegaConf.select(cfg, leaf.path.replace("[0]", ".0"))
    plain = OmegaConf.to_container(current) if OmegaConf.is_config(current) else current
    return f"{plain!r} -> {variant(leaf, plain)}"


def test_every_numeric_setting_declares_its_bound():
    """A number without a declared range would be checked nowhere before loading."""
    missing = []
    for leaf in LEAVES:
        hint, _ = _unwrap(leaf.hint)
        if hint in (int, float) and "bound" not in dict(leaf.meta):
            missing.append(leaf.path)
    assert not missing, missing


def test_bookkeeping_fields_are_documented():
    assert all(reason.strip() for reason in BOOKKEEPING.values())
    assert set(BOOKKEEPING) <= {leaf.path for leaf in LEAVES}
