"""``align-eval``: the evaluation suites outside training.

    align-eval RUN_DIR                 score every checkpoint not yet scored (and the start, as step 0),
                                       print a table, write eval/summary.json, eval/<metric>.png and
                                       eval/report.html (one self-contained page)
    align-eval RUN_A RUN_B ...         the same for each, then compare them side by side (--out DIR,
                                       with report.html)
    align-eval MODEL_OR_CHECKPOINT     score one model (a local directory or hub id) with --eval's suites
    align-eval RUN_DIR --push [REPO_ID]  then push its final/ with the updated model card to the hub
    align-eval judge FILE --column completion   label every response: compliance, refusal or partial

After scoring a finished run, its model card (final/README.md) is written again with the new
before / after results, and pushed when the run was configured with ``hub.push=true`` or
``--push`` is given (to ``--push REPO_ID``, or the run's ``hub.repo_id``).

A run directory is scored with the suites recorded in its config.yaml (the hook's own), so the
numbers equal the hook's for the same checkpoint; ``--eval NAME`` picks another set from
``conf/eval/`` and ``--set key=value`` overrides any eval key (e.g. refusal.prompts.max_prompts=20).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from align_train import console
from align_train.cli.errors import run_command
from align_train.config import AlignConfig
from align_train.errors import ConfigError
from align_train.evaluation.evaluator import Evaluator, brief, enabled_suites, evaluation_records, judge_disagreements
from align_train.evaluation.suites import HEADLINE
from align_train.report import render_report
from align_train.run_dir import REPORT_FILE, RunDir, checkpoint_dirs, write_json, write_text


# --------------------------------------------------------------------------- configuration


def eval_group_config(name: str):
    """An option of the ``eval`` config group, as Hydra composes it."""
    from align_train.composition import compose, setup
    from align_train.paths import CONF_DIR

    setup()
    if not (CONF_DIR / "eval" / f"{name}.yaml").is_file():
        options = sorted(p.stem for p in (CONF_DIR / "eval").glob("*.yaml"))
        raise ConfigError(f"--eval {name}: no such eval config; choose one of {', '.join(options)}")
    return compose([f"eval={name}", "~recipe"])


# Settings of earlier versions that the schema no longer has: dropped when an old run directory is read.
LEGACY_KEYS = ("summary",)


def run_config(run_dir: Path, trust_remote_code: bool = False):
    """The run's resolved config.yaml, validated against the schema.

    A run directory may come from someone else: its ``model.trust_remote_code`` is never honoured;
    only align-eval's own ``--trust-remote-code`` turns remote code on.
    """
    from align_train.paths import register_resolvers

    register_resolvers()
    run = RunDir(run_dir)
    try:
        recorded = OmegaConf.load(run.config)
        for key in LEGACY_KEYS:
            recorded.pop(key, None)
        cfg = OmegaConf.merge(OmegaConf.structured(AlignConfig), recorded)
    except Exception as err:
        raise ConfigError(f"{run.config}: not a readable align-train config ({err})") from None
    if cfg.model.trust_remote_code and not trust_remote_code:
        console.log(f"{run_dir}: its config.yaml sets model.trust_remote_code=true; align-eval ignores that "
                    "(pass --trust-remote-code to allow the model's own code)")
    cfg.model.trust_remote_code = bool(trust_remote_code)
    return cfg


def with_overrides(eval_cfg, overrides: list[str]):
    try:
        return OmegaConf.merge(eval_cfg, OmegaConf.from_dotlist(overrides))
    except Exception as err:
        raise ConfigError(f"--set {' '.join(overrides)}: {err}") from None


# --------------------------------------------------------------------------- loading what is scored


def load_for_eval(path: str, model_cfg, tuning_name: str | None = None):
    """A model directory, checkpoint or hub id with its tokenizer, loaded by the tuning strategy that wrote it.

    Weights load from safetensors only, adapters included: a directory that offers only pickled
    weights (adapter_model.bin, pytorch_model.bin) is refused rather than unpickled.
    """
    from align_train.models import load_tokenizer
    from align_train.tuning import load_trained_model

    local = Path(path)
    model = load_trained_model(path, model_cfg, tuning_name)
    # A checkpoint carries its tokenizer; a directory without one uses the run's (a hub id carries its own).
    has_tokenizer = (local / "tokenizer_config.json").is_file() or not local.exists()
    source = path if has_tokenizer else (model_cfg.tokenizer or model_cfg.name_or_path)
    return model, load_tokenizer(OmegaConf.merge(model_cfg, {"tokenizer": source}))


def check_target(path: str) -> None:
    """A path align-eval scores: a run directory, a model or checkpoint directory, or a hub id; else say so."""
    local = Path(path).expanduser()
    expected = ("expected a run directory (with config.yaml), a model or checkpoint directory (config.json or "
                "adapter_config.json) or a hub model id")
    if local.is_file():
        raise ConfigError(f"{path}: is a file; {expected}")
    if local.is_dir():
        if not (RunDir(local).config.is_file() or any((local / name).is_file() for name in ("config.json",
                                                                                              "adapter_config.json"))):
            shown = ", ".join(sorted(p.name for p in local.iterdir())[:6]) or "nothing"
            raise ConfigError(f"{path}: holds {shown}; {expected}")
        return
    looks_local = path.startswith((".", "/", "~")) or path.count("/") > 1 or "\\" in path
    if looks_local:
        raise ConfigError(f"{path}: does not exist; {expected}")


def run_targets(run: RunDir, cfg) -> list[tuple[int, str, bool]]:
    """(step, model path, is the starting model) for the start, every complete checkpoint and final/."""
    targets = [(0, cfg.model.name_or_path, True)] if cfg.eval.baseline else []
    steps = {step: str(path) for step, path in checkpoint_dirs(run.root) if path in run.checkpoints()}
    if run.final.is_dir() and run.is_complete():
        steps.setdefault(run.final_step(), str(run.final))  # a checkpoint at that step holds the same weights
    return targets + [(step, path, False) for step, path in sorted(steps.items())]


def heldout_of(cfg) -> dict:
    """The run's held-out rows, rebuilt exactly (the split is seeded) for the likelihood suites."""
    from align_train.data import load_data
    from align_train.objectives import make_objective

    objective = make_objective(cfg.objective)
    return load_data(cfg.data, objective.accepts, objective.name).heldout


def score_run(run_dir: Path, eval_name: str | None, overrides: list[str], force: bool,
              trust_remote_code: bool = False) -> list[dict]:
    run = RunDir(run_dir)
    cfg = run_config(run_dir, trust_remote_code)
    if eval_name:
        cfg.eval = eval_group_config(eval_name).eval
    cfg.eval = with_overrides(cfg.eval, overrides)
    if not enabled_suites(cfg.eval):  # a run trained without evaluation (eval=none): the default suites
        cfg.eval = with_overrides(eval_group_config("default").eval, overrides)
        console.log(f"{run_dir}: {'--eval ' + eval_name if eval_name else 'its config'} enables no evaluation "
                    f"suite; scoring with eval=default: {', '.join(enabled_suites(cfg.eval))} "
                    "(--eval NAME picks others, e.g. --eval safety)")
    else:
        chosen = f"--eval {eval_name}" if eval_name else "the run's own suites"
        console.log(f"{run_dir}: scoring with {chosen}: {', '.join(enabled_suites(cfg.eval))}")
    evaluator = Evaluator(cfg.eval, run.eval_dir, heldout=heldout_of(cfg), max_length=cfg.model.max_length)
    done = set() if force else {r["step"] for r in evaluation_records(run.eval_dir) if not r.get("skipped")}
    for step, path, is_start in run_targets(run, cfg):
        if step in done:
            continue
        console.log(f"{run_dir}: scoring step {step} ({path})")
        model, tokenizer = load_for_eval(path, cfg.model, cfg.tuning.name)
        evaluator.evaluate(model, tokenizer, step, is_reference=is_start, label=path)
        del model
    full = evaluation_records(run.eval_dir)
    records = [brief(r) for r in full]
    write_json(run.eval_summary, {"run": str(run_dir), "steps": records})
    plot_steps({str(run_dir): records}, run.eval_dir)
    write_text(run.eval_report, render_report({str(run_dir): full}, f"align-eval: {run_dir}"))
    console.log(f"{run_dir}: report {run.eval_report}")
    return records


def score_model(path: str, eval_name: str, overrides: list[str], out_dir: Path, trust_remote_code: bool = False) -> dict:
    cfg = OmegaConf.merge(OmegaConf.structured(AlignConfig), eval_group_config(eval_name))
    cfg.model.trust_remote_code = bool(trust_remote_code)
    cfg.eval = with_overrides(cfg.eval, overrides)
    for name in ("preference", "perplexity"):  # no run, so no held-out split: these need their own data
        suite = getattr(cfg.eval, name)
        if suite.enabled and not suite.path:
            console.log(f"{name}: no data (set --set {name}.path=FILE); skipped")
            suite.enabled = False
    state = Path(path) / "trainer_state.json"
    step = json.loads(state.read_text())["global_step"] if state.is_file() else 0
    evaluator = Evaluator(cfg.eval, out_dir, max_length=cfg.model.max_length)
    model, tokenizer = load_for_eval(path, cfg.model)
    return evaluator.evaluate(model, tokenizer, step, label=path)


def publish(run_dir: Path, push: str | None) -> None:
    """A finished run's card with the scores it has now, pushed when the run asked for it or ``--push`` does."""
    from align_train.hub import check_hub, push_run
    from align_train.model_card import write_card

    run = RunDir(run_dir)
    if not (run.final.is_dir() and run.is_complete()):
        if push is not None:
            raise ConfigError(f"{run_dir}: --push needs a finished run (final/ and summary.json)")
        return
    card = write_card(run)
    hub = run_config(run_dir).hub
    if push:
        hub.repo_id = push
    if push is None and not hub.push:
        console.log(f"{run_dir}: model card updated ({card})")
        return
    check_hub(OmegaConf.merge(hub, {"push": True}))
    console.log(f"{run_dir}: pushing final/ with its model card to {hub.repo_id}", topic="hub")
    console.log(f"pushed: {push_run(run, hub)}", topic="hub")


# --------------------------------------------------------------------------- reports


def table(columns: dict[str, dict]) -> str:
    """Metrics as rows, one column per step or run."""
    keys = [k for k in HEADLINE if any(k in c for c in columns.values())]
    width = max([len(k) for k in keys] + [6])
    names = list(columns)
    lines = [" " * width + "  " + "  ".join(f"{n[-14:]:>14}" for n in names)]
    for key in keys:
        cells = [columns[n].get(key) for n in names]
        lines.append(f"{key:<{width}}  " + "  ".join(f"{'-' if v is None else f'{v:.4f}':>14}" for v in cells))
    failed = {n: c.get("failed") for n, c in columns.items() if c.get("failed")}
    for name, suites in failed.items():
        lines.append(f"{name}: failed suites {', '.join(suites)}")
    lines += [f"warning: {line}" for line in judge_disagreements(columns)]
    return "\n".join(lines)


def plot_steps(runs: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """One PNG per metric: its value against the step, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key in HEADLINE:
        series = {run: [(r["step"], r[key]) for r in records if key in r] for run, records in runs.items()}
        series = {run: points for run, points in series.items() if points}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for run, points in series.items():
            ax.plot(*zip(*points), marker="o", label=Path(run).name or run)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{key}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# --------------------------------------------------------------------------- entry points


def judge_main(argv: list[str]) -> None:
    from align_train.evaluation.judges import judge_file, make_judge

    parser = argparse.ArgumentParser(prog="align-eval judge", description="Label responses as compliance, refusal or partial.")
    parser.add_argument("file", help="a .csv or .jsonl of responses")
    parser.add_argument("--column", default="completion", help="the column holding the responses")
    parser.add_argument("--prompt-column", default="prompt", help="the prompts' column, if any (model judges)")
    parser.add_argument("--judge", default="rules", help="rules | classifier | llm")
    parser.add_argument("--judge-model", default=None, help="local path or hub id for classifier / llm judges "
                                                            "(with --server-url: the server's model name)")
    parser.add_argument("--preset", default="refusal", help="llm judge prompt and parser: refusal | xstest | "
                                                            "strongreject | wildguard | llamaguard")
    parser.add_argument("--server-url", default=None, help="an OpenAI-compatible server for the llm judge")
    parser.add_argument("--api-key-env", default=None, help="the environment variable holding the server's key")
    parser.add_argument("--out", default=None, help="output file (default: <name>.judged.<ext> beside the input)")
    args = parser.parse_args(argv)
    try:
        judge = make_judge(args.judge, model=args.judge_model, preset=args.preset, server_url=args.server_url,
                           api_key_env=args.api_key_env)
        out = judge_file(args.file, column=args.column, judge=judge, prompt_column=args.prompt_column,
                         out_path=args.out)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    print(out)


def score_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="align-eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run directories, checkpoints or models")
    parser.add_argument("--eval", default=None, help="an eval config of conf/eval/ (default: the run's own; "
                                                      "'tiny' for a bare model)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an eval key")
    parser.add_argument("--out", default=None, help="where a bare model's or a comparison's results go")
    parser.add_argument("--force", action="store_true", help="score steps that already have a result again")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="let the model's own code run (never taken from a run directory's config)")
    parser.add_argument("--push", nargs="?", const="", default=None, metavar="REPO_ID",
                        help="push each scored run's final/ and model card to the hub (to REPO_ID, else the run's "
                             "hub.repo_id); a run configured with hub.push=true is pushed without it")
    args = parser.parse_args(argv)
    if args.push is not None and not any(RunDir(p).config.is_file() for p in args.paths):
        raise ConfigError("--push publishes run directories; none of the paths is one")
    for path in args.paths:
        check_target(path)

    runs = [Path(p) for p in args.paths if RunDir(p).config.is_file()]
    models = [p for p in args.paths if not RunDir(p).config.is_file()]
    columns: dict[str, dict] = {}
    all_steps: dict[str, list[dict]] = {}
    for run in runs:
        records = score_run(run, args.eval, args.set, args.force, args.trust_remote_code)
        publish(run, args.push)
        all_steps[str(run)] = records
        if len(runs) == 1 and not models:
            columns.update({f"step {r['step']}": r for r in records})
        elif records:
            columns[str(run)] = records[-1]
    for path in models:
        out_dir = Path(args.out or f"eval-{Path(path).name or 'model'}")
        record = score_model(path, args.eval or "tiny", args.set, out_dir, args.trust_remote_code)
        columns[path] = brief(record)
        written = out_dir / f"step-{record['step']}.json"
        console.log(f"{path}: {written}")
    print(table(columns))
    if len(runs) > 1:
        out_dir = Path(args.out or "eval-compare")
        write_json(out_dir / "comparison.json", {"runs": all_steps})
        plot_steps(all_steps, out_dir)
        full = {str(run): evaluation_records(RunDir(run).eval_dir) for run in runs}
        write_text(out_dir / REPORT_FILE, render_report(full, "align-eval: " + " vs ".join(map(str, runs))))
        console.log(f"comparison: {out_dir}/comparison.json, {out_dir}/{REPORT_FILE} and {out_dir}/*.png")


def main(argv: list[str] | None = None) -> None:
    import os

    from align_train.train import quiet_libraries

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_libraries()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["judge"]:
        run_command("align-eval judge", judge_main, argv[1:])
    else:
        run_command("align-eval", score_main, argv)


if __name__ == "__main__":
    main()
