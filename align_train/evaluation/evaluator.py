"""Score a model with the enabled suites and write ``eval/step-N.json``.

The same Evaluator serves the training hook and ``align-eval``, so both give the same numbers
for the same checkpoint. Inputs (prompts, held-out rows, judges) are loaded once, when the
Evaluator is built, which is before any model loads in a training run: a bad path fails fast.
A suite that fails is recorded in the JSON with its error and the others still run, unless
``strict`` is set.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from pathlib import Path

from align_train.config import SourceConfig
from align_train.distributed import process_state
from align_train.data.sources import read_source
from align_train.errors import ConfigError, DataError
from align_train.data.prompts import load_prompts
from align_train.evaluation.suites import HEADLINE, SUITES, Suite
from align_train.run_dir import write_json

REFERENCE_FILE = "reference_preference.json"


class NoHeldoutRows(ConfigError):
    """A likelihood suite without rows to score (skipped where its settings allow it)."""


class EvalContext:
    """What suites share: loaded prompts, held-out rows, judges, and the starting model's preference scores."""

    def __init__(self, cfg, out_dir: Path, heldout: dict[str, list[dict]] | None, max_length: int):
        self.cfg = cfg
        self.out_dir = out_dir
        self.heldout = heldout or {}
        self.max_length = max_length
        self.samples = cfg.samples
        self._judges: dict = {}
        self._reference: dict[str, list] = {}
        self.scoring_reference = False  # true while the starting model itself is being scored

    def prompts(self, key: str, prompt_cfg) -> list[str]:
        return load_prompts(key, prompt_cfg, self.cfg.seed)

    def judge(self, judge_cfg):
        from align_train.evaluation.judges import make_judge

        key = (judge_cfg.name, judge_cfg.model, judge_cfg.preset, judge_cfg.server_url, judge_cfg.prompt_template)
        if key not in self._judges:
            try:
                self._judges[key] = make_judge(
                    judge_cfg.name, model=judge_cfg.model, batch_size=judge_cfg.batch_size,
                    refusal_labels=list(judge_cfg.refusal_labels), prompt_template=judge_cfg.prompt_template,
                    preset=judge_cfg.preset, server_url=judge_cfg.server_url, api_key_env=judge_cfg.api_key_env,
                )
            except ValueError as err:
                raise ConfigError(f"eval judge: {err}") from None
        return self._judges[key]

    def heldout_rows(self, key: str, suite_cfg, fmt: str) -> list[dict]:
        """Rows of one format: from the suite's own file, or the run's held-out split."""
        found_fmt, rows = self._rows(key, suite_cfg, fmt)
        if found_fmt != fmt:
            raise DataError(f"{key}.path: '{suite_cfg.path}' holds {found_fmt} data; this suite needs {fmt}")
        return rows

    def heldout_any(self, key: str, suite_cfg) -> tuple[str, list[dict]]:
        return self._rows(key, suite_cfg, None)

    def _rows(self, key: str, suite_cfg, fmt: str | None) -> tuple[str, list[dict]]:
        if suite_cfg.path:
            src = read_source(key, SourceConfig(path=suite_cfg.path, format=fmt), skip_invalid_rows=False)
            return src.format, src.rows[: suite_cfg.max_examples]
        candidates = [fmt] if fmt else list(self.heldout)
        for name in candidates:
            if self.heldout.get(name):
                return name, self.heldout[name][: suite_cfg.max_examples]
        wanted = f"{fmt} rows" if fmt else "rows"
        raise NoHeldoutRows(
            f"{key}: the run has no held-out {wanted} (set data.eval_fraction or data.eval) and {key}.path is not set"
        )

    # ------------------------------------------------------------- the reference for implicit rewards

    @staticmethod
    def fingerprint(rows: list[dict]) -> str:
        return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]

    def reference_preference_scores(self, rows: list[dict]):
        """The starting model's (chosen, rejected) log-probs for these rows, if known (memory, then disk)."""
        key = self.fingerprint(rows)
        if key not in self._reference:
            path = self.out_dir / REFERENCE_FILE
            if path.is_file():
                stored = json.loads(path.read_text())
                if stored.get("fingerprint") == key:
                    self._reference[key] = [tuple(s) for s in stored["scores"]]
        return self._reference.get(key)

    def set_reference_preference_scores(self, rows: list[dict], scores) -> None:
        key = self.fingerprint(rows)
        self._reference[key] = scores
        if not process_state().is_main_process:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.out_dir / REFERENCE_FILE, {"fingerprint": key, "scores": [list(s) for s in scores]})


class Evaluator:
    def __init__(self, cfg, out_dir, heldout: dict[str, list[dict]] | None = None, max_length: int = 1024):
        check_eval_config(cfg)
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.ctx = EvalContext(cfg, self.out_dir, heldout, max_length)
        self.suites: list[Suite] = []
        self.skipped: list[str] = []  # suites without the held-out rows they need, where allowed
        for name in enabled_suites(cfg):
            suite = SUITES[name](getattr(cfg, name))
            try:
                suite.prepare(self.ctx)
            except NoHeldoutRows:
                if not getattr(suite.cfg, "skip_without_data", False):
                    raise
                self.skipped.append(name)
                continue
            self.suites.append(suite)

    def check_model(self, model) -> None:
        """Every suite's checks against the loaded model (a layer index beyond its blocks): ConfigError."""
        for suite in self.suites:
            suite.check_model(model, f"eval.{suite.name}")

    def path(self, step: int) -> Path:
        return self.out_dir / f"step-{step}.json"

    def scored_steps(self) -> set[int]:
        return {int(p.stem.split("-", 1)[1]) for p in self.out_dir.glob("step-*.json")}

    def evaluate(self, model, tokenizer, step: int, is_reference: bool = False, label: str | None = None) -> dict:
        """Run every enabled suite on ``model``; ``is_reference`` marks the starting model (step 0).

        In a multi-process run every process calls this together (the suites share the work out) and
        the main process writes the record.
        """
        started = time.time()
        self.check_model(model)  # a bad layer index is named before any suite generates
        self.ctx.scoring_reference = is_reference
        record: dict = {"step": step, "model": label}
        suites: dict = {}
        errors: dict = {}
        judges: dict = {}  # which judge labelled each judged suite: scores of different judges never mix silently
        for suite in self.suites:
            try:
                result = suite.run(model, tokenizer, self.ctx)
            except Exception as err:  # recorded, and training goes on unless strict
                if self.cfg.strict:
                    raise
                errors[suite.name] = f"{type(err).__name__}: {err}"
                errors[f"{suite.name}_traceback"] = traceback.format_exc(limit=6)
                continue
            if is_reference and suite.name == "preference" and result.scores is not None:
                self.ctx.set_reference_preference_scores(suite.rows, result.scores)
            record.update(result.metrics)
            if isinstance(result.details.get("judge"), dict):
                judges[suite.name] = result.details["judge"]
            suites[suite.name] = {"metrics": result.metrics, "details": result.details, "samples": result.samples}
        record.update({"seconds": round(time.time() - started, 3), "judges": judges, "suites": suites,
                       "errors": errors})
        if not process_state().is_main_process:  # every process scored its share; one writes
            return record
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.path(step), record)
        return record


def evaluation_records(out_dir: Path) -> list[dict]:
    """Every ``step-N.json`` in a run's eval directory, in step order."""
    paths = sorted(Path(out_dir).glob("step-*.json"), key=lambda p: int(p.stem.split("-", 1)[1]))
    return [json.loads(p.read_text()) for p in paths]


def headline(record: dict) -> dict[str, float]:
    return {k: record[k] for k in HEADLINE if isinstance(record.get(k), (int, float))}


def brief(record: dict) -> dict:
    """A step's headline numbers and the names of suites that failed (for summaries and tables)."""
    failed = sorted(k for k in record.get("errors", {}) if not k.endswith("_traceback"))
    return {"step": record["step"], **headline(record), "failed": failed, "skipped": record.get("skipped"),
            "judges": record.get("judges", {})}


def judge_disagreements(records: dict[str, dict]) -> list[str]:
    """Per judged suite, a line naming the judges when the given records (steps or runs) were labelled by
    different ones: their refusal rates are not comparable."""
    lines = []
    suites = sorted({suite for record in records.values() for suite in (record.get("judges") or {})})
    for suite in suites:
        seen = {name: (record.get("judges") or {}).get(suite) for name, record in records.items()}
        identities = {f"{j['name']} {j['version']}" for j in seen.values() if j}
        if len(identities) > 1:
            used = "; ".join(f"{name}: {j['name']} {j['version']}" for name, j in seen.items() if j)
            lines.append(f"{suite}: labelled by different judges, not comparable ({used})")
    return lines


def check_eval_config(cfg) -> None:
    """Config checks that need nothing loaded, each suite's own."""
    for name, suite in SUITES.items():
        if getattr(cfg, name).enabled:
            suite.check(getattr(cfg, name), f"eval.{name}")


def enabled_suites(cfg) -> list[str]:
    return [name for name in SUITES if getattr(cfg, name).enabled]
