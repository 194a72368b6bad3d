"""The configuration schema: typed dataclasses that Hydra validates every recipe against.

Each config group in ``conf/`` selects one of these schemas (``conf/objective/dpo.yaml``
starts from ``dpo_schema``), so an unknown key or a wrong type fails at composition time,
before anything is loaded. The registries at the bottom are the only names a recipe can
select: recipes never instantiate arbitrary callables.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from align_train.errors import ConfigError

# --------------------------------------------------------------------------- declared bounds


@dataclass(frozen=True)
class Bound:
    """The values a numeric setting accepts, declared once beside the field and checked before anything loads."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple = ()  # special values accepted outside the range (max_steps=-1: train by epochs)

    def accepts(self, value) -> bool:
        if value in self.also:
            return True
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = f"{'<' if self.high_open else '<='} {self.high:g}"
        return text + "".join(f" or {v}" for v in self.also)


POSITIVE = Bound(0, low_open=True)
NON_NEGATIVE = Bound(0)
COUNT = Bound(1)  # an integer >= 1
FRACTION = Bound(0, 1, high_open=True)  # [0, 1)
UNIT = Bound(0, 1)  # [0, 1]
OPEN_UNIT = Bound(0, 1, low_open=True, high_open=True)  # (0, 1)
SEED = Bound(0, 2**32 - 1)  # numpy's seeds
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def bounded(default, bound: Bound, **extra):
    """A dataclass field whose value must lie in ``bound`` (``check_config`` enforces it)."""
    return field(default=default, metadata={"bound": bound, **extra})


def named(default):
    """A name that becomes part of a path, a job script and log lines: letters, digits, '.', '_', '-'."""
    return field(default=default, metadata={"pattern": NAME})


def trl(default=None, factory=None, bound: Bound | None = None):
    """A setting passed unchanged to the objective's TRL config under the same name (checked against TRL's fields)."""
    metadata = {"trl": True, **({"bound": bound} if bound is not None else {})}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def free_text(default=None):
    """Text that may span lines (a prompt template); other settings may not hold control characters."""
    return field(default=default, metadata={"multiline": True})

# --------------------------------------------------------------------------- model


@dataclass
class ModelConfig:
    """Which model to load and how."""

    name_or_path: str = MISSING  # hub id or local directory
    tokenizer: Optional[str] = None  # defaults to name_or_path
    revision: Optional[str] = None
    # "pretrained" loads weights; "random" builds the architecture from its config only.
    init: str = "pretrained"
    dtype: str = "float32"  # float32 | bfloat16 | float16 | auto
    attn_implementation: Optional[str] = None  # eager | sdpa | flash_attention_2 | None (library default)
    gradient_checkpointing: bool = False
    max_length: int = bounded(1024, COUNT)  # tokens per example (prompt + completion), longer ones are truncated
    trust_remote_code: bool = False  # never on unless the user sets it
    # The chat template, replacing the tokenizer's own (a base model has none): a preset name (chatml, llama3,
    # gemma, mistral, zephyr, phi3: data/chat_templates/) or a Jinja file. None: the tokenizer's template.
    chat_template: Optional[str] = None
    # Load the linear layers' weights quantised to 4 bits with bitsandbytes (QLoRA with tuning=lora): nf4 | fp4.
    quantization: Optional[str] = None


# --------------------------------------------------------------------------- data


@dataclass
class SourceConfig:
    """One data source of a mixture: a local file or directory, or a hub dataset."""

    path: str = MISSING  # file (.jsonl .json .csv .parquet), directory of such files or in hub layout, hub dataset name
    # A layout (preference, implicit_preference, feedback, safety_labels, completion, messages, documents) or a
    # format (messages, completion, preference, feedback, documents); None detects it from the columns.
    format: Optional[str] = None
    split: str = "train"  # hub datasets only
    subset: Optional[str] = None  # hub dataset configuration name
    columns: Dict[str, str] = field(default_factory=dict)  # {column in the source: field of the format}
    # Multiplier on the source's size: 0.5 samples half its rows, 2.0 repeats it twice, 1.0 takes it as is.
    weight: float = bounded(1.0, POSITIVE)
    # Read as a stream while training runs (midtrain's document corpora; weights become each source's share of the
    # documents drawn; needs train.max_steps): see align_train/data/streaming.py.
    streaming: bool = False
    # Bundled example data (the tiny_* data groups): trains only while no other training source is
    # configured, so a recipe or command line that names its own sources never gets it mixed in.
    fallback: bool = False


@dataclass
class DataConfig:
    """Training (and held-out) data: named sources mixed with weights."""

    train: Dict[str, SourceConfig] = field(default_factory=dict)
    eval: Dict[str, SourceConfig] = field(default_factory=dict)  # explicit held-out sources
    eval_fraction: float = bounded(0.0, FRACTION)  # held out from train when no eval sources are given
    max_eval_rows: Optional[int] = bounded(None, NON_NEGATIVE)
    # A row with an empty prompt / completion / missing field is an error; with this set it is skipped,
    # and the count is printed and written to the run directory.
    skip_invalid_rows: bool = False
    # The held-out split, the weights' sampling and the order of the training rows (which is the order KTO and BCO
    # read them in: their batches are sequential).
    seed: int = bounded(42, SEED)
    # A directory holding hub datasets as <owner>/<name>/ in their hub file layout (as `huggingface-cli download
    # --repo-type dataset` writes them): a source naming a hub dataset is read from there, never from the hub.
    hub_mirror: Optional[str] = None


# --------------------------------------------------------------------------- objectives


@dataclass
class ObjectiveConfig:
    """Base of all objectives: ``name`` picks the adapter from the objective registry."""

    name: str = MISSING
    # Per-token log-probs of policy and reference: only labelled tokens go through the output projection,
    # logprob_vocab_chunk vocabulary columns at a time (recomputed in backward), so no (batch x length x
    # vocabulary) logits exist. false: TRL's fused head (every position, 32,768 columns at a time).
    chunked_logprobs: bool = True
    logprob_vocab_chunk: int = bounded(8192, COUNT)
    # Each batch's rows packed into one row: position ids restart per sequence and attention stays inside
    # each sequence, so no padding token is computed (chosen and rejected of a pair, unpaired rows alike).
    padding_free: bool = False
    # Batches of rows of similar length (transformers' LengthGroupedSampler): less padding when not padding-free.
    group_by_length: bool = False


@dataclass
class SFTObjectiveConfig(ObjectiveConfig):
    """Supervised fine-tuning through TRL's SFTTrainer."""

    name: str = "sft"
    packing: bool = trl(False)
    # Train on assistant turns only (chat data); needs a chat template with generation markers.
    assistant_only_loss: bool = True
    # Prompt/completion data: train on the completion only (None = TRL's default, True).
    completion_only_loss: Optional[bool] = None


@dataclass
class MidtrainObjectiveConfig(ObjectiveConfig):
    """Causal-LM loss on every token of documents (model-spec midtraining), through TRL's SFTTrainer.

    A general text corpus to limit forgetting is a second ``data.train`` source; its ``weight``
    sets the mix (see recipes/tiny/msm_pipeline.yaml), so the data layer does the mixing.
    """

    name: str = "midtrain"
    packing: bool = trl(True)  # documents are concatenated into max_length blocks: no padding wasted
    # TRL's packing strategy. "wrapped" (default): documents joined by EOS and cut into blocks, as in
    # pre-training, with any attention implementation. "bfd" / "bfd_split": best-fit, padding-free; documents
    # stay apart only under FlashAttention (elsewhere they attend across boundaries).
    packing_strategy: str = trl("wrapped")


@dataclass
class ReferenceObjectiveConfig(ObjectiveConfig):
    """An objective scored against a frozen reference (DPO, KTO, BCO): its strength, and where the reference's
    log-probs come from."""

    beta: float = trl(0.1, bound=POSITIVE)
    # Reference log-probs computed once before training: no reference model in memory while training.
    precompute_ref_log_probs: bool = trl(False)
    # With precompute_ref_log_probs: the log-probs are kept beside the run directories (ref_cache/) and reused by
    # every run with the same reference, tokenised data, max length and chat template (a sweep over beta).
    ref_cache: bool = True


@dataclass
class DPOObjectiveConfig(ReferenceObjectiveConfig):
    """Direct preference optimisation and its variants through TRL's DPOTrainer."""

    name: str = "dpo"
    # One or several of TRL's loss types; several are combined with loss_weights (e.g. MPO).
    loss_type: List[str] = trl(factory=lambda: ["sigmoid"])
    loss_weights: Optional[List[float]] = trl(None)
    label_smoothing: float = trl(0.0, bound=Bound(0, 0.5))  # robust / exo / cDPO
    ld_alpha: Optional[float] = trl(None, bound=UNIT)  # LD-DPO length desensitisation
    f_divergence_type: str = trl("reverse_kl")
    f_alpha_divergence_coef: float = trl(0.5, bound=POSITIVE)
    discopop_tau: float = trl(0.05, bound=POSITIVE)
    use_weighting: bool = trl(False)
    sync_ref_model: bool = trl(False)
    ref_model_mixup_alpha: float = trl(0.6, bound=UNIT)
    ref_model_sync_steps: int = trl(512, bound=COUNT)


@dataclass
class KTOObjectiveConfig(ReferenceObjectiveConfig):
    """Kahneman-Tversky optimisation on unpaired thumbs-up / thumbs-down data via TRL's KTOTrainer."""

    name: str = "kto"
    loss_type: str = trl("kto")  # kto | apo_zero_unpaired
    desirable_weight: float = trl(1.0, bound=POSITIVE)
    undesirable_weight: float = trl(1.0, bound=POSITIVE)


@dataclass
class UDMConfig:
    """BCO's underlying-distribution matching: weight undesirable rows by p_desirable(x) / p_undesirable(x)."""

    enabled: bool = False
    # None: mean-pooled last-layer states of the reference model (no extra model); or a local path / hub id
    # of a sentence-embedding encoder.
    embedding_model: Optional[str] = None
    max_prompts: int = bounded(2048, COUNT)  # distinct prompts of each kind sampled to fit the classifier
    min_prompts: int = bounded(16, Bound(2))  # fewer of either kind is an error
    heldout_fraction: float = bounded(0.2, OPEN_UNIT)  # of the sample, to report the classifier's accuracy
    # Logistic regression's C (inverse L2 strength); strong, so that it learns kinds of prompts, not prompts.
    regularization: float = bounded(0.01, POSITIVE)
    min_ratio: float = bounded(0.5, POSITIVE)  # weights are clipped to [min_ratio, max_ratio]
    max_ratio: float = bounded(10.0, POSITIVE)
    batch_size: int = bounded(16, COUNT)  # prompts per embedding forward pass
    seed: int = bounded(0, SEED)


@dataclass
class BCOObjectiveConfig(ReferenceObjectiveConfig):
    """Binary classifier optimisation on thumbs-up / thumbs-down feedback (ours: TRL 1.16 has no BCO trainer)."""

    name: str = "bco"
    udm: UDMConfig = field(default_factory=UDMConfig)


@dataclass
class SimPOObjectiveConfig(ObjectiveConfig):
    """SimPO (Meng et al. 2024): reference-free; the length-normalised log-prob margin must exceed gamma / beta.

    loss = -log sigmoid(beta * (mean log p(chosen) - mean log p(rejected)) - gamma)
    """

    name: str = "simpo"
    beta: float = bounded(2.0, POSITIVE)  # the paper's range: 2.0 - 2.5
    gamma: float = bounded(1.0, NON_NEGATIVE)  # target reward margin (the paper keeps gamma / beta near 0.5)
    label_smoothing: float = bounded(0.0, Bound(0, 0.5, high_open=True))


@dataclass
class ORPOObjectiveConfig(ObjectiveConfig):
    """ORPO (Hong et al. 2024): NLL of the chosen answer minus beta x the log-sigmoid of the odds ratio; no reference.

    loss = NLL(chosen) - beta * log sigmoid(log odds(chosen) - log odds(rejected)), odds from mean token log-probs
    """

    name: str = "orpo"
    beta: float = bounded(0.1, POSITIVE)  # the paper's lambda


@dataclass
class CPOObjectiveConfig(ObjectiveConfig):
    """CPO (Xu et al. 2024): a DPO-like loss without a reference, plus a behaviour-cloning NLL on the chosen answer.

    loss = -log sigmoid(beta * (log p(chosen) - log p(rejected))) + alpha * NLL(chosen)
    """

    name: str = "cpo"
    beta: float = bounded(0.1, POSITIVE)
    alpha: float = bounded(1.0, NON_NEGATIVE)  # weight of the behaviour-cloning term (TRL's cpo_alpha)
    label_smoothing: float = bounded(0.0, Bound(0, 0.5, high_open=True))


# --------------------------------------------------------------------------- tuning strategies


@dataclass
class TuningConfig:
    """Base of all tuning strategies: ``name`` picks the strategy from the tuning registry."""

    name: str = MISSING


@dataclass
class FullTuningConfig(TuningConfig):
    """Every parameter trains."""

    name: str = "full"


@dataclass
class LoraTuningConfig(TuningConfig):
    """Low-rank adapters through peft; the frozen base with adapters disabled is the reference model."""

    name: str = "lora"
    r: int = bounded(16, COUNT)
    alpha: int = bounded(32, POSITIVE)
    dropout: float = bounded(0.05, FRACTION)
    # Modules to adapt: names (suffixes such as q_proj), and the presets "attention" and "mlp" (each family's own
    # projection names, e.g. Phi-3's fused qkv_proj / gate_up_proj), or ["all-linear"] (every linear layer but
    # the output head, peft's choice).
    target_modules: List[str] = field(default_factory=lambda: ["attention", "mlp"])
    bias: str = "none"  # none | all | lora_only
    use_rslora: bool = False  # rank-stabilised scaling: alpha / sqrt(r) instead of alpha / r
    use_dora: bool = False  # DoRA: the adapted weight's magnitude trains apart from its direction
    modules_to_save: List[str] = field(default_factory=list)  # modules trained in full beside the adapters
    # The adapter is written to final/; with this set, the merged full model is written to final-merged/ too.
    save_merged: bool = False


@dataclass
class FreezeTuningConfig(TuningConfig):
    """Only parameters whose name matches one of the patterns train; everything else is frozen."""

    name: str = "freeze"
    # Regular expressions matched (re.search) against parameter names, e.g. "layers\\.[23]\\.mlp".
    trainable: List[str] = field(default_factory=list)


# --------------------------------------------------------------------------- training loop


@dataclass
class LatentPerturbationConfig:
    """Latent adversarial patch training (LAPT): normalised random noise added to chosen blocks' hidden states
    in every training forward, whatever the objective and the tuning strategy. Off while ``layers`` is empty."""

    layers: List[int] = field(default_factory=list)  # 1-based blocks, e.g. [4, 8]
    scale: float = bounded(1.0, POSITIVE)  # multiplies the normalised noise (1: its norm matches the hidden state's)
    seed: int = bounded(0, SEED)  # the noise generator, seeded once per run


@dataclass
class TrainConfig:
    """Optimisation settings. The global batch is the setting; accumulation is derived from it."""

    # None: the tuning strategy's default (full / freeze 1e-4, lora 1e-3, nest 1e-2: fewer trained parameters
    # want a larger rate). A recipe or the command line that sets it wins; the run records which it was.
    learning_rate: Optional[float] = bounded(None, POSITIVE)
    num_epochs: float = bounded(1.0, POSITIVE)
    max_steps: int = bounded(-1, Bound(1, also=(-1,)))  # > 0 overrides num_epochs; -1 trains num_epochs
    global_batch_size: int = bounded(8, COUNT)  # examples per optimiser step, over all processes
    per_device_batch_size: int = bounded(4, COUNT)  # micro-batch; accumulation = global / (micro x processes)
    eval_batch_size: Optional[int] = bounded(None, COUNT)  # defaults to per_device_batch_size
    lr_scheduler: str = "cosine"  # any of transformers' scheduler types
    warmup_ratio: float = bounded(0.0, FRACTION)
    weight_decay: float = bounded(0.0, NON_NEGATIVE)
    max_grad_norm: float = bounded(1.0, NON_NEGATIVE)  # 0: no clipping
    optim: str = "adamw_torch"  # any of transformers' optimizer names
    # What is random in training: a random init, dropout, the sampler's batch order (SFT, DPO and its kin). A run
    # with a pretrained, dropout-free model and sequential batches (KTO, BCO) has nothing random for it to seed.
    seed: int = bounded(42, SEED)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (mixed-precision autocast)
    logging_steps: int = bounded(5, COUNT)
    save_steps: int = bounded(0, NON_NEGATIVE)  # 0: save only at the end
    # Complete checkpoints kept; an older one is deleted only after a newer one is marked complete.
    save_total_limit: Optional[int] = bounded(2, COUNT)
    eval_steps: int = bounded(0, NON_NEGATIVE)  # 0: evaluate on the held-out split only at the end
    use_cpu: bool = False  # force CPU even where an accelerator exists (multi-process CPU runs need it)
    dataloader_num_workers: int = bounded(0, NON_NEGATIVE)
    # A NaN / inf loss stops the run (naming the step and the last good checkpoint); true drops such steps
    # (their gradients are discarded, no parameter moves) and goes on. Not under DeepSpeed.
    skip_nonfinite_steps: bool = False
    latent_perturbation: LatentPerturbationConfig = field(default_factory=LatentPerturbationConfig)
    # Extra keyword arguments for the TRL config (checked against its fields before anything loads).
    trainer_kwargs: Dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- tracking and summary


@dataclass
class LoggerConfig:
    """Experiment tracking beyond the local metrics.jsonl (which is always written)."""

    # none, one of transformers' reporting integrations (wandb, tensorboard, mlflow, trackio, comet, ...) or a
    # list of them: logger.name=[tensorboard,wandb].
    name: Any = "none"
    project: str = "align-train"  # wandb / comet project, mlflow experiment, trackio project
    entity: Optional[str] = None  # wandb entity, comet workspace
    # offline: nothing leaves the machine (wandb offline, mlflow and tensorboard files in the run directory, comet
    # offline archive); online: sync to the tracker's server; disabled: no tracker starts.
    mode: str = "offline"
    tags: List[str] = field(default_factory=list)


@dataclass
class HubConfig:
    """Pushing the trained model, with its model card, to the Hugging Face Hub (or a server speaking its API).

    The token comes from the environment (``HF_TOKEN`` or ``huggingface-cli login``), never from the config;
    the endpoint from ``HF_ENDPOINT``.
    """

    push: bool = False  # push final/ and its README.md at the end of the run, and after align-eval scores it
    repo_id: Optional[str] = None  # "user/name" or "org/name"; required when push=true
    private: bool = True  # a repository created by the push is private unless this is false
    revision: Optional[str] = None  # a branch to push to (created when missing); None: the default branch
    push_checkpoints: bool = False  # also push the complete checkpoints, under checkpoints/checkpoint-N/
    # The licence in the card's metadata; None: the base model's (read from its card), if it has one.
    license: Optional[str] = None
    tags: List[str] = field(default_factory=list)  # extra tags for the card (align-train adds its own)


# --------------------------------------------------------------------------- evaluation


@dataclass
class PromptSetConfig:
    """Prompts for a suite: a local file (.jsonl .json .csv .parquet) or a hub dataset."""

    path: Optional[str] = None
    column: str = "prompt"  # the column holding the prompt text
    split: str = "train"  # hub datasets only
    subset: Optional[str] = None
    where: Dict[str, str] = field(default_factory=dict)  # keep rows whose column equals the value
    max_prompts: int = bounded(100, COUNT)  # a seeded sample of this many (all when fewer)


@dataclass
class GenerationConfig:
    max_new_tokens: int = bounded(64, COUNT)
    batch_size: int = bounded(16, COUNT)
    do_sample: bool = False  # greedy by default: the same checkpoint always gets the same score
    temperature: float = bounded(1.0, POSITIVE)
    top_p: float = bounded(1.0, Bound(0, 1, low_open=True))
    system_prompt: Optional[str] = free_text()
    # transformers (default) | vllm: needs vLLM installed and a GPU; loads the saved model, so align-eval only
    backend: str = "transformers"


@dataclass
class JudgeConfig:
    """Decides whether a response refuses: keyword rules (default), a classifier, or a causal LM."""

    name: str = "rules"  # rules (keyword: the same, its older name) | classifier | llm
    model: Optional[str] = None  # local path or hub id, for classifier / llm (with server_url: the server's model name)
    batch_size: int = bounded(16, COUNT)
    refusal_labels: List[str] = field(default_factory=lambda: ["refusal", "rejection", "refused"])
    # llm judge: the judging prompt and its answer parser: refusal | xstest | strongreject | wildguard | llamaguard
    preset: str = "refusal"
    server_url: Optional[str] = None  # llm judge through an OpenAI-compatible server (e.g. http://host:8000/v1)
    api_key_env: Optional[str] = None  # the environment variable holding the server's key, if it needs one
    prompt_template: Optional[str] = free_text()  # llm judge: with {prompt} and {response}


@dataclass
class GenerationSuiteConfig:
    """refusal / over_refusal: generate answers to prompts, judge each as refusal or compliance."""

    enabled: bool = False
    prompts: PromptSetConfig = field(default_factory=PromptSetConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)


@dataclass
class LikelihoodSuiteConfig:
    """preference / perplexity: scored on held-out rows (the run's held-out split unless a path is given)."""

    enabled: bool = False
    path: Optional[str] = None  # a data file in one of the formats; None: the run's held-out split
    max_examples: int = bounded(64, COUNT)
    batch_size: int = bounded(8, COUNT)
    # true: a run without held-out rows of the kind this suite needs skips it (the default before / after
    # suites); false: that is an error.
    skip_without_data: bool = False


@dataclass
class SeparationSuiteConfig:
    """latent_separation: how far apart safe and unsafe prompts sit in the model's hidden states."""

    enabled: bool = False
    safe: PromptSetConfig = field(default_factory=PromptSetConfig)
    unsafe: PromptSetConfig = field(default_factory=PromptSetConfig)
    layers: Optional[List[int]] = None  # 1-based transformer blocks; None: all
    pooling: str = "mean"  # mean | last
    lam: float = bounded(0.5, UNIT)  # weight of the Xie-Beni term against the Calinski-Harabasz term
    batch_size: int = bounded(16, COUNT)


@dataclass
class LatentRobustnessSuiteConfig(GenerationSuiteConfig):
    """latent_robustness: the latent activation steering attack per layer, judged on harmful prompts (a generation
    suite's prompts, generation and judge, plus the attack's own settings)."""

    layers: Optional[List[int]] = None  # 1-based blocks attacked one at a time; None: every block
    scale: float = bounded(1.0, POSITIVE)  # multiplies the normalised perturbation (1: the paper's)
    seed: int = bounded(0, SEED)  # the random vector
    batch_size: int = bounded(8, COUNT)  # prompts per forward of the NLL probe


@dataclass
class BranchingSuiteConfig:
    """branching_factor: exp of the mean next-token entropy along the model's own answers."""

    enabled: bool = False
    prompts: PromptSetConfig = field(default_factory=PromptSetConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class EvalConfig:
    """The evaluation hook: which suites score each checkpoint, and when."""

    enabled: bool = False
    # true: score during training (main process). false: only record the suites in config.yaml, and score
    # the checkpoints with `align-eval RUN_DIR` (for instance in a separate job).
    inline: bool = True
    baseline: bool = True  # score the starting model as step 0
    on_save: bool = True  # score every checkpoint as it is saved
    at_end: bool = True  # score the final model
    strict: bool = False  # a failing suite stops training (otherwise it is recorded and training goes on)
    samples: int = bounded(5, NON_NEGATIVE)  # generations kept per suite in the JSON, for a person to read
    seed: int = bounded(0, SEED)  # prompt sampling
    refusal: GenerationSuiteConfig = field(default_factory=GenerationSuiteConfig)
    over_refusal: GenerationSuiteConfig = field(default_factory=GenerationSuiteConfig)
    preference: LikelihoodSuiteConfig = field(default_factory=LikelihoodSuiteConfig)
    perplexity: LikelihoodSuiteConfig = field(default_factory=LikelihoodSuiteConfig)
    latent_separation: SeparationSuiteConfig = field(default_factory=SeparationSuiteConfig)
    latent_robustness: LatentRobustnessSuiteConfig = field(default_factory=LatentRobustnessSuiteConfig)
    branching_factor: BranchingSuiteConfig = field(default_factory=BranchingSuiteConfig)


# --------------------------------------------------------------------------- NeST (needs PromptSetConfig)


@dataclass
class NestTuningConfig(TuningConfig):
    """Neuron selective tuning: only safety-relevant MLP neurons move, one shared update per cluster."""

    name: str = "nest"
    # Probe sets: the frozen model reads both, and a per-layer linear probe separates them. A row's
    # column may hold a string or a list of chat messages (the last user turn is taken).
    harmful: PromptSetConfig = field(default_factory=lambda: PromptSetConfig(max_prompts=200))
    harmless: PromptSetConfig = field(default_factory=lambda: PromptSetConfig(max_prompts=200))
    threshold: float = bounded(2.0, POSITIVE)  # keep neurons whose probe weight's z-score within its layer exceeds this in |z|
    max_neurons_per_layer: Optional[int] = bounded(None, COUNT)  # keep at most this many (largest |z|) per layer
    # probe: the neurons above; random: as many per layer, drawn at random (a control, not a method).
    selection: str = "probe"
    clusters: int = bounded(3, COUNT)  # k-means clusters per layer (k); fewer when a layer has fewer selected neurons
    # Where each cluster's vector is added: down (the members' down_proj columns), gate / up (their rows).
    weights: List[str] = field(default_factory=lambda: ["down"])
    probe_c: float = bounded(1.0, POSITIVE)  # inverse L2 strength of the logistic-regression probe (sklearn's C)
    probe_batch_size: int = bounded(16, COUNT)
    probe_max_length: int = bounded(256, COUNT)  # prompt tokens read by the probe
    seed: int = bounded(0, SEED)  # k-means initialisation


# --------------------------------------------------------------------------- pipelines


@dataclass
class StageConfig:
    """One stage of a pipeline: Hydra overrides applied on top of the recipe for this stage only.

    Each stage is composed like a run of its own (``objective=sft``, ``data=tiny_sft``,
    ``train.learning_rate=1e-4``...), starts from the previous stage's final model, and writes
    to ``RUN/stages/<i>-<name>/``. See align_train/pipeline.py.
    """

    name: str = named(MISSING)  # letters, digits, '.', '-', '_': names the stage's directory
    overrides: List[str] = field(default_factory=list)
    enabled: bool = True  # false: leave the stage out (e.g. the control run without midtraining)


# --------------------------------------------------------------------------- the whole run


@dataclass
class AlignConfig:
    """A complete run: what to train, on what, how, and where to write it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: Any = MISSING  # one of OBJECTIVE_SCHEMAS
    tuning: Any = MISSING  # one of TUNING_SCHEMAS
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    run_name: str = named("run")  # names the run directory, the SLURM job, the tracker run
    output_dir: str = MISSING
    # false: start fresh (an existing checkpoint in output_dir is an error); true: continue from the last
    # complete checkpoint in output_dir (fresh start if none); a path: continue from that checkpoint.
    resume: Any = False
    # A pipeline: when given, each stage runs in turn (align_train/pipeline.py) instead of one run.
    stages: List[StageConfig] = field(default_factory=list)


OBJECTIVE_SCHEMAS: Dict[str, type] = {
    "midtrain": MidtrainObjectiveConfig,
    "sft": SFTObjectiveConfig,
    "dpo": DPOObjectiveConfig,
    "kto": KTOObjectiveConfig,
    "bco": BCOObjectiveConfig,
    "simpo": SimPOObjectiveConfig,
    "orpo": ORPOObjectiveConfig,
    "cpo": CPOObjectiveConfig,
}

TUNING_SCHEMAS: Dict[str, type] = {
    "full": FullTuningConfig,
    "lora": LoraTuningConfig,
    "freeze": FreezeTuningConfig,
    "nest": NestTuningConfig,
}


def register_schemas(store: ConfigStore | None = None) -> None:
    """Make the schemas selectable from the YAML groups (``defaults: [dpo_schema]``)."""
    store = store or ConfigStore.instance()
    store.store(name="align_config_schema", node=AlignConfig)
    store.store(group="model", name="model_schema", node=ModelConfig)
    store.store(group="data", name="data_schema", node=DataConfig)
    store.store(group="logger", name="logger_schema", node=LoggerConfig)
    for name, schema in OBJECTIVE_SCHEMAS.items():
        store.store(group="objective", name=f"{name}_schema", node=schema)
    for name, schema in TUNING_SCHEMAS.items():
        store.store(group="tuning", name=f"{name}_schema", node=schema)


# --------------------------------------------------------------------------- the closed, checked config

REGISTRIES = {"objective": OBJECTIVE_SCHEMAS, "tuning": TUNING_SCHEMAS}
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tab and newline allowed


def check_config(cfg) -> None:
    """The composed config is closed and in range, before anything loads.

    Every key is a field of its schema, including keys added with ``+`` (Hydra lets those
    past a structured config; here they are refused: a recorded setting that nothing reads is a
    lie in the run directory). Free-form maps (``train.trainer_kwargs``, ``columns``, ``where``)
    accept new keys; their receivers check them. Every number is finite and within the bound its
    field declares; no string holds control characters (they would forge log lines or break a
    job script), except the free-text fields.
    """
    try:
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False) if isinstance(
            cfg, (DictConfig, ListConfig)) else cfg
    except Exception as err:  # an interpolation that does not resolve
        raise ConfigError(f"{getattr(err, 'full_key', '') or 'config'}: {str(err).splitlines()[0]}") from None
    _check_dataclass(container, AlignConfig, "")


def _check_dataclass(value: Any, schema: type, path: str) -> None:
    if value is None or value == MISSING:
        return
    if not isinstance(value, dict):
        raise ConfigError(f"{path.rstrip('.') or 'config'}: expected a mapping of {schema.__name__} settings, got "
                          f"{type(value).__name__}")
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key, child in value.items():
        where = f"{path}{key}"
        if key not in fields:
            raise ConfigError(
                f"{where}: no such setting ({schema.__name__} has {', '.join(fields)}). The config is closed: a key "
                f"added with '+' is refused too; check the spelling, or print every setting with --cfg job"
            )
        _check_value(child, hints[key], where, fields[key].metadata)


def _check_value(value: Any, hint: Any, path: str, meta) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any and path in REGISTRIES:
        registry = REGISTRIES[path]
        name = value.get("name") if isinstance(value, dict) else None
        if name not in registry:
            raise ConfigError(f"{path}.name is {name!r}; expected one of {', '.join(registry)}")
        _check_dataclass(value, registry[name], f"{path}.")
    elif dataclasses.is_dataclass(hint):
        _check_dataclass(value, hint, f"{path}.")
    elif origin in (dict, Dict) and isinstance(value, dict):
        for key, child in value.items():
            if CONTROL.search(str(key)):
                raise ConfigError(f"{path}: key {str(key)!r} holds control characters")
            _check_value(child, args[1] if args else Any, f"{path}.{key}", {})
    elif origin in (list, List) and isinstance(value, list):
        for i, child in enumerate(value):
            _check_value(child, args[0] if args else Any, f"{path}[{i}]", meta)
    else:
        _check_leaf(value, path, meta)


def _check_leaf(value: Any, path: str, meta) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path} is {value}; expected a finite number")
    bound = meta.get("bound")
    if bound is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and not bound.accepts(value):
        raise ConfigError(f"{path} is {value}; expected {bound.describe()}")
    if isinstance(value, str):
        control = CONTROL_MULTILINE if meta.get("multiline") else CONTROL
        if control.search(value):
            raise ConfigError(f"{path} holds control characters ({value[:40]!r}); expected plain text")
        pattern = meta.get("pattern")
        if pattern is not None and value != MISSING and not pattern.match(value):
            raise ConfigError(f"{path} is {value!r}; expected letters, digits, '.', '_' or '-' (at most 100, "
                              "starting with a letter or digit): it names directories, jobs and tracker runs")
