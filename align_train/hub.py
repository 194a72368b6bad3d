"""Pushing a run's final model, with its model card, to the Hugging Face Hub (``hub.push=true hub.repo_id=...``).

Through huggingface_hub's ``HfApi``: the repository is created when missing (private unless
``hub.private=false``), ``final/`` is uploaded in one commit (its ``README.md`` is the card
model_card.py wrote), and with ``hub.push_checkpoints`` every complete checkpoint follows under
``checkpoints/``. The token is huggingface_hub's (``HF_TOKEN`` or a login), never a setting; the
endpoint is ``HF_ENDPOINT`` (the hub by default, or a server speaking its API). A push that fails
leaves the run complete and says how to push it again (``align-eval RUN --push``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from align_train.errors import AlignTrainError, ConfigError
from align_train.run_dir import RunDir


def check_hub(hub_cfg) -> None:
    """Before anything loads: a push needs a valid repo_id."""
    if hub_cfg.repo_id is not None:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(hub_cfg.repo_id)
        except HFValidationError as err:
            raise ConfigError(f"hub.repo_id is {hub_cfg.repo_id!r}; expected 'user/name' or 'org/name' "
                              f"({str(err).splitlines()[0]})") from None
    if hub_cfg.push and not hub_cfg.repo_id:
        raise ConfigError("hub.push=true needs hub.repo_id=USER/NAME (the repository the model is pushed to)")
    if hub_cfg.revision is not None and not str(hub_cfg.revision).strip():
        raise ConfigError("hub.revision is empty; expected a branch name, or leave it unset for the default branch")


def endpoint() -> str | None:
    """``HF_ENDPOINT`` as set now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT") or None


def push_plan(run_dir, hub_cfg) -> list[tuple[Path, str]]:
    """(local folder, path in the repository) for every folder a push uploads, in order."""
    run = RunDir(run_dir)
    if not run.final.is_dir():
        raise ConfigError(f"{run.root}: has no final/ to push (the run has not finished)")
    plan = [(run.final, "")]
    if hub_cfg.push_checkpoints:
        plan += [(path, f"checkpoints/{path.name}") for path in run.checkpoints()]
    return plan


def publish(run_dir, hub_cfg, api=None) -> str | None:
    """The end of a run: push when ``hub.push`` asks for it; returns the commit's URL (None: nothing pushed)."""
    if not hub_cfg.push:
        return None
    return push_run(run_dir, hub_cfg, api)


def push_run(run_dir, hub_cfg, api=None) -> str:
    """Upload final/ (and the checkpoints when asked) to ``hub.repo_id``; returns the commit's URL."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    check_hub(hub_cfg)
    run = RunDir(run_dir)
    retry = f"the run is complete; push it again with: align-eval {run.root} --push"
    if constants.HF_HUB_OFFLINE:
        raise AlignTrainError(f"hub.push=true but HF_HUB_OFFLINE is set, so nothing can be uploaded to "
                              f"{hub_cfg.repo_id}; {retry} (with HF_HUB_OFFLINE unset)")
    plan = push_plan(run, hub_cfg)
    api = api or HfApi(endpoint=endpoint())
    summary = json.loads(run.summary.read_text()) if run.summary.is_file() else {}
    message = (f"align-train: {summary.get('recipe', run.root.name)} ({summary.get('objective', '?')} + "
               f"{summary.get('tuning', '?')}), step {summary.get('steps', '?')}")
    try:
        api.create_repo(hub_cfg.repo_id, private=hub_cfg.private, exist_ok=True)
        if hub_cfg.revision:
            api.create_branch(hub_cfg.repo_id, branch=hub_cfg.revision, exist_ok=True)
        url = None
        for folder, in_repo in plan:
            commit = api.upload_folder(repo_id=hub_cfg.repo_id, folder_path=str(folder), path_in_repo=in_repo or None,
                                       revision=hub_cfg.revision, commit_message=message if not in_repo else
                                       f"{message}: {in_repo}")
            url = url or getattr(commit, "commit_url", None) or str(commit)
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError, ValueError) as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        raise AlignTrainError(f"hub.push: uploading {run.final} to {hub_cfg.repo_id} failed"
                              f"{f' (HTTP {status})' if status else ''}: {str(err).splitlines()[0]}; {retry}") from None
    return url
