"""The model card of a run's final model (``final/README.md``), written from the run directory alone.

Everything comes from what the run recorded: ``config.yaml`` (model, data, objective, tuning, hub
settings), ``run_info.json`` (the command line, package versions), ``summary.json`` (parameters,
steps, data) and the evaluation records ``eval/step-N.json`` (before / after). So the end of a run
and ``align-eval`` (after it scored more) write the same card. The metadata is huggingface_hub's
``ModelCardData``: ``base_model`` is the hub id the run started from (also through a local hub
snapshot or an earlier align-train run's card), the licence is passed through from the base
model's card unless ``hub.license`` sets one, and the evaluation goes into ``model-index`` so the
hub renders it.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from align_train.evaluation.evaluator import evaluation_records, headline
from align_train.evaluation.suites import SUITES
from align_train.paths import ASSETS_ROOT, CONF_DIR
from align_train.run_dir import RunDir

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
CARD = "README.md"
# Metric -> the suite that measures it (for the model-index results and the table).
SUITE_OF = {metric: name for name, suite in SUITES.items() for metric in suite.headline}
# The evaluation sets shipped in data/datasets/, by file name: (name, type) in model-index.
KNOWN_SETS = {"advbench_harmful_behaviors": ("AdvBench harmful behaviors", "advbench_harmful_behaviors"),
              "xstest_prompts": ("XSTest v2 prompts", "xstest_prompts")}


# --------------------------------------------------------------------------- where things came from


def is_local(path: str | None) -> bool:
    return bool(path) and (Path(str(path)).expanduser().exists() or str(path).startswith((".", "/", "~")))


def hub_id_of(name_or_path: str | None) -> str | None:
    """The hub id a model (or dataset) path names: the id itself, or the repository of a hub-cache snapshot."""
    if not name_or_path:
        return None
    text = str(name_or_path)
    if not is_local(text):
        return text if REPO_ID.match(text) else None
    for part in Path(text).expanduser().resolve().parts:
        for kind in ("models--", "datasets--"):
            if part.startswith(kind):
                return part[len(kind):].replace("--", "/")
    return None


def card_metadata(path: Path) -> dict:
    """The YAML metadata of a README.md (a model card), {} when there is none or it does not parse."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.S)
    if not match:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def base_card(name_or_path: str, revision: str | None = None) -> dict:
    """The metadata of the base model's card: its own directory's, or a hub model's cached copy (never fetched)."""
    if is_local(name_or_path):
        return card_metadata(Path(name_or_path).expanduser() / CARD)
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, CARD, revision=revision)
    except Exception:
        return {}
    return card_metadata(Path(cached)) if isinstance(cached, str) else {}


def base_model_of(model_cfg) -> tuple[str | None, dict]:
    """(hub id of the base model, its card's metadata); an earlier align-train run's card names its own base."""
    metadata = base_card(model_cfg.name_or_path, model_cfg.revision)
    found = hub_id_of(model_cfg.name_or_path)
    if found is None and isinstance(metadata.get("base_model"), str) and "align-train" in (metadata.get("tags") or []):
        found = metadata["base_model"]  # a pipeline's later stage starts from the stage before's final/
    return found, metadata


def shown_path(path) -> str:
    """A path as a reader of the card understands it: bundled files relative to align-train's assets."""
    text = str(path)
    try:
        return f"{Path(text).resolve().relative_to(ASSETS_ROOT.resolve())} (bundled with align-train)"
    except (ValueError, OSError):
        return text


def command_of(run_info: dict) -> str:
    """The command line the run was started with."""
    argv = [str(a) for a in run_info.get("argv") or []]
    if not argv:
        overrides = run_info.get("overrides") or []
        return "align-train " + " ".join(shlex.quote(o) for o in overrides)
    program = Path(argv[0]).name
    head = ["python", "-m", "align_train"] if program in ("__main__.py", "-m") else [program or "align-train"]
    return " ".join([*head, *(shlex.quote(a) for a in argv[1:])])


def recipe_of(run_info: dict) -> str:
    """The recipe the run composed: recipe=NAME on its command line, else the default of conf/config.yaml."""
    for override in run_info.get("overrides") or []:
        key, _, value = str(override).partition("=")
        if key.lstrip("+~") == "recipe":
            return value
    try:
        defaults = yaml.safe_load((CONF_DIR / "config.yaml").read_text()).get("defaults", [])
    except (OSError, yaml.YAMLError):
        return "?"
    return next((str(d["recipe"]) for d in defaults if isinstance(d, dict) and "recipe" in d), "?")


def settings_text(node: dict, skip=("name",)) -> str:
    """``key=value`` pairs of a settings block (nested blocks flattened), for one line of the card."""
    flat = []

    def walk(value, prefix):
        if isinstance(value, dict):
            for key, child in value.items():
                if not prefix and key in skip:
                    continue
                walk(child, f"{prefix}{key}.")
        elif value is not None:
            shown = shown_path(value) if isinstance(value, str) and is_local(value) else value
            flat.append(f"`{prefix.rstrip('.')}={json.dumps(shown) if isinstance(shown, (list, dict)) else shown}`")

    walk(node, "")
    return ", ".join(flat) or "defaults"


# --------------------------------------------------------------------------- evaluation


def before_after(run: RunDir, final_step: int | None) -> tuple[dict, dict]:
    """The headline scores of the start (step 0) and of the final model, as the evaluation records hold them."""
    records = [r for r in evaluation_records(run.eval_dir) if headline(r)]
    before = headline(records[0]) if records and records[0]["step"] == 0 else {}
    final = [r for r in records if r["step"] == final_step] if final_step is not None else []
    after = headline(final[-1]) if final else {}
    return before, after


def dataset_of_suite(suite: str, eval_cfg: dict, train_sources: dict) -> tuple[str, str]:
    """(dataset name, dataset type/id) a suite's scores are on, for model-index."""
    node = eval_cfg.get(suite) or {}
    paths = ([node.get("prompts", {}).get("path")] if "prompts" in node else
             [node.get("safe", {}).get("path"), node.get("unsafe", {}).get("path")] if suite == "latent_separation"
             else [node.get("path")])
    paths = [p for p in paths if p]
    if not paths:  # the likelihood suites on the run's held-out split
        first = next(iter(train_sources.values()), {}) if train_sources else {}
        source = first.get("path") if isinstance(first, dict) else None
        hub = hub_id_of(source) if source else None
        return f"held-out split of {hub or Path(str(source or 'the training data')).stem}", hub or "held-out"
    path = paths[0]
    stem = Path(str(path)).stem
    if stem in KNOWN_SETS:
        return KNOWN_SETS[stem]
    hub = hub_id_of(path)
    return (hub, hub) if hub else (stem, stem)


def eval_results(before: dict, after: dict, eval_cfg: dict, train_sources: dict) -> list:
    from huggingface_hub import EvalResult

    results = []
    for key in [*after, *(k for k in before if k not in after)]:
        suite = SUITE_OF.get(key, "evaluation")
        name, kind = dataset_of_suite(suite, eval_cfg, train_sources)
        for when, values in (("after training", after), ("before training", before)):
            if key in values:
                results.append(EvalResult(task_type="text-generation", task_name="Text Generation",
                                          dataset_type=kind, dataset_name=name, metric_type=key,
                                          metric_name=f"{key} ({when})", metric_value=round(float(values[key]), 6)))
    return results


# --------------------------------------------------------------------------- the card


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def card_text(run_dir) -> str:
    """final/README.md of a run: YAML metadata (base model, datasets, licence, tags, model-index) and the story."""
    from huggingface_hub import ModelCard, ModelCardData

    run = RunDir(run_dir)
    cfg = OmegaConf.to_container(OmegaConf.load(run.config), resolve=False)
    info, summary, report = read_json(run.run_info), read_json(run.summary), read_json(run.data_report)
    hub = cfg.get("hub") or {}
    model = cfg.get("model") or {}
    base_id, base_meta = base_model_of(OmegaConf.create({"name_or_path": model.get("name_or_path"),
                                                         "revision": model.get("revision")}))
    sources = {**(cfg.get("data") or {}).get("train", {}), **(cfg.get("data") or {}).get("eval", {})}
    datasets = sorted({hid for s in sources.values() if isinstance(s, dict) and (hid := hub_id_of(s.get("path")))
                       and not is_local(s.get("path"))})
    objective, tuning = cfg.get("objective") or {}, cfg.get("tuning") or {}
    adapter = (run.final / "adapter_config.json").is_file()
    before, after = before_after(run, summary.get("steps"))
    name = (hub.get("repo_id") or "").split("/")[-1] or cfg.get("run_name") or "model"
    tags = list(dict.fromkeys(["align-train", "trl", str(objective.get("name")), str(tuning.get("name")),
                               *(["peft", "lora"] if adapter else []), *(hub.get("tags") or [])]))
    data = ModelCardData(
        base_model=base_id, datasets=datasets or None, license=hub.get("license") or base_meta.get("license"),
        library_name="peft" if adapter else "transformers", pipeline_tag="text-generation", tags=tags,
        model_name=name, eval_results=eval_results(before, after, cfg.get("eval") or {}, sources) or None,
    )
    if base_meta.get("license_name") and not hub.get("license"):  # "other" licences carry their name and link
        data.license_name, data.license_link = base_meta.get("license_name"), base_meta.get("license_link")
    body = card_body(cfg, info, summary, report, before, after, base_id, adapter, name)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}").content


def card_body(cfg, info, summary, report, before, after, base_id, adapter, name) -> str:
    model = cfg.get("model") or {}
    objective, tuning, train = cfg.get("objective") or {}, cfg.get("tuning") or {}, cfg.get("train") or {}
    base = f"[{base_id}](https://huggingface.co/{base_id})" if base_id else f"`{shown_path(model.get('name_or_path'))}`"
    what = "A LoRA adapter for" if adapter else "A fine-tune of"
    lines = [f"# {name}", "",
             f"{what} {base}, trained with align-train by **{objective.get('name')}** with "
             f"**{tuning.get('name')}** tuning.", ""]
    lines += ["## Training", "",
              f"- Recipe: `{recipe_of(info)}` (run name `{cfg.get('run_name')}`)",
              f"- Objective: **{objective.get('name')}**: {settings_text(objective)}",
              f"- Tuning strategy: **{tuning.get('name')}**: {settings_text(tuning)}"]
    params = summary.get("parameters") or {}
    if params.get("total"):
        share = 100.0 * params["trainable"] / max(params["total"], 1)
        lines.append(f"- Trainable parameters: {params['trainable']:,} of {params['total']:,} ({share:.2f}%)")
    steps = summary.get("steps")
    loss = summary.get("train_loss")
    lines.append(f"- Optimisation: {steps if steps is not None else '?'} steps, global batch "
                 f"{train.get('global_batch_size')}, learning rate {train.get('learning_rate')} "
                 f"({train.get('lr_scheduler')}), max length {model.get('max_length')} tokens, "
                 f"precision {train.get('precision')}" + (f"; final train loss {loss:.4f}" if loss is not None else ""))
    if adapter:
        lines.append(f"- Load: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(\"{base_id or 'BASE'}\"), "
                     "\"THIS_REPO\")`")
    lines += ["", "Command:", "", "```bash", command_of(info), "```", ""]
    lines += data_section(cfg, report)
    lines += eval_section(before, after)
    packages = {k: v for k, v in (info.get("packages") or {}).items() if v}
    if packages:
        lines += ["## Framework versions", "", *[f"- {k} {v}" for k, v in packages.items()], ""]
    return "\n".join(lines)


def data_section(cfg, report) -> list[str]:
    sources = (cfg.get("data") or {}).get("train") or {}
    rows = report.get("sources") or {}
    lines = ["## Data", "", "| source | path | format | train rows |", "| --- | --- | --- | --- |"]
    for key, source in sources.items():
        if not isinstance(source, dict):
            continue
        found = rows.get(key) or {}
        path = source.get("path")
        shown = f"[{path}](https://huggingface.co/datasets/{path})" if hub_id_of(path) and not is_local(path) else \
            shown_path(path)
        lines.append(f"| {key} | {shown} | {found.get('format') or source.get('format') or 'auto'} | "
                     f"{'streamed' if found.get('streamed') else found.get('train_rows', '?')} |")
    lines.append("")
    total = report.get("train_rows")
    if total is not None:
        lines += [f"{total} training rows, {report.get('eval_rows', 0)} held out "
                  f"(format {report.get('format')}).", ""]
    return lines


def eval_section(before: dict, after: dict) -> list[str]:
    if not before and not after:
        return ["## Evaluation", "", "No evaluation suite scored this run (`align-eval RUN_DIR` scores it).", ""]
    lines = ["## Evaluation", "", "Scored by align-train's evaluation suites on the starting model (step 0) and the "
             "final model.", "", "| metric | suite | before | after |", "| --- | --- | --- | --- |"]
    for key in [*before, *(k for k in after if k not in before)]:
        b, a = before.get(key), after.get(key)
        lines.append(f"| {key} | {SUITE_OF.get(key, '-')} | {'-' if b is None else f'{b:.4f}'} | "
                     f"{'-' if a is None else f'{a:.4f}'} |")
    return lines + [""]


def write_card(run_dir) -> Path:
    """Write final/README.md (and the same card at the run's root, in place of the trainer's generic one)."""
    run = RunDir(run_dir)
    text = card_text(run)
    path = run.final / CARD
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    run.file(CARD).write_text(text, encoding="utf-8")
    return path
