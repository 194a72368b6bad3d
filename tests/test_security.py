"""Recipes are data, never code: an adversarial corpus of recipes and config directories, each refused by name
before anything runs, with a canary file elsewhere on disk proving that nothing did; subprocesses that no
recipe can steer; job scripts that quote every value; run directories from strangers read without trust."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from align_train.cli import train as cli
from align_train.recipes import register_recipes
from align_train.errors import ConfigError
from align_train.paths import PROJECT_ROOT
from tests.conftest import compose_config

CANARY_TEXT = "canary: untouched\n"


@pytest.fixture
def canary(tmp_path):
    """A file a payload would modify, and a path a payload would create."""
    home = tmp_path / "elsewhere"
    home.mkdir()
    (home / "canary.txt").write_text(CANARY_TEXT)
    return home


def untouched(home: Path) -> bool:
    return (home / "canary.txt").read_text() == CANARY_TEXT and sorted(p.name for p in home.iterdir()) == [
        "canary.txt"]


def run_cli(argv: list[str], capsys, monkeypatch, recipes: Path | None = None) -> str:
    """align-train in this process with these arguments; returns stderr; it must exit with code 2."""
    if recipes is not None:
        monkeypatch.setenv("ALIGN_TRAIN_RECIPES", str(recipes))
    monkeypatch.setattr(sys, "argv", ["align-train", *argv])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    return capsys.readouterr().err


# --------------------------------------------------------------------------- the corpus

# name -> (recipe text, fragments the refusal names); {created} / {canary} / {home} are filled in per test.
CORPUS = {
    "env_set_git_fsmonitor": (
        "hydra:\n  job:\n    env_set:\n      GIT_CONFIG_COUNT: '1'\n      GIT_CONFIG_KEY_0: core.fsmonitor\n"
        "      GIT_CONFIG_VALUE_0: 'touch {created}'\n", ["hydra.job"]),
    "callbacks_open": (
        "hydra:\n  callbacks:\n    x:\n      _target_: builtins.open\n      _args_: ['{canary}', w]\n",
        ["hydra.callbacks"]),
    "target_top_level": ("_target_: builtins.open\n_args_: ['{canary}', w]\n", ["_target_"]),
    "target_in_objective": ("objective:\n  _target_: os.system\n  _args_: ['touch {created}']\n",
                            ["objective._target_"]),
    "target_deep_in_eval": ("eval:\n  refusal:\n    judge:\n      _target_: builtins.open\n      _args_: ['{canary}', w]\n",
                            ["eval.refusal.judge._target_"]),
    "target_in_data_source": ("data:\n  train:\n    x:\n      path: a.jsonl\n      _target_: builtins.exec\n",
                              ["data.train.x._target_"]),
    "call_and_partial": ("model:\n  _call_: true\n  _partial_: true\n", ["model._call_"]),
    "target_in_a_list": ("objective:\n  loss_type:\n    - _target_: builtins.open\n", ["objective.loss_type[0]._target_"]),
    "oc_env_resolver": ("model:\n  name_or_path: ${{oc.env:HOME}}/model\n", ["model.name_or_path", "oc.env"]),
    "oc_decode_resolver": ("run_name: ${{oc.decode:'{{a: 1}}'}}\n", ["run_name", "oc.decode"]),
    "env_nested_in_allowed": ("model:\n  name_or_path: ${{asset:${{oc.env:SECRET}}}}\n", ["oc.env"]),
    "hydra_resolver": ("run_name: ${{hydra:runtime.cwd}}\n", ["run_name", "hydra"]),
    "python_tag": ("run_name: !!python/object/apply:os.system ['touch {created}']\n", ["tag"]),
    "custom_tag": ("model:\n  name_or_path: !include /etc/passwd\n", ["tag"]),
    "billion_laughs": ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcde", "bcdef")), ["expands"]),
    "recursive_alias": ("a: &a\n  b: *a\n", ["recursive"]),
    "defaults_traversal": ("defaults:\n  - override /model: ../../../../../../{home_rel}/payload\n", ["defaults[0]"]),
    "defaults_absolute": ("defaults:\n  - override /model: /etc/passwd\n", ["defaults[0]"]),
    "defaults_hydra_group": ("defaults:\n  - override /hydra/job_logging: default\n", ["defaults[0]", "Hydra"]),
    "defaults_hydra_path": ("defaults:\n  - /hydra/callbacks/x\n", ["defaults[0]", "Hydra"]),
    "hydra_searchpath": ("hydra:\n  searchpath: ['file://{home}']\n", ["hydra.searchpath"]),
    "hydra_run_dir": ("hydra:\n  run:\n    dir: '{home}/out'\n  output_subdir: .x\n", ["hydra.run"]),
    "hydra_mode": ("hydra:\n  mode: MULTIRUN\n", ["hydra.mode"]),
    "sweep_sets_hydra": ("hydra:\n  sweeper:\n    params:\n      hydra.job.env_set.GIT_DIR: '{home}'\n",
                         ["hydra.sweeper.params"]),
    "sweep_reads_env": ("hydra:\n  sweeper:\n    params:\n      objective.beta: ${{oc.env:BETA}}\n",
                        ["hydra.sweeper.params.objective.beta", "oc.env"]),
    "sweep_and_launcher": ("hydra:\n  sweeper:\n    params:\n      objective.beta: 0.1,0.2\n  launcher:\n    setup: ['touch {created}']\n",
                           ["hydra.launcher"]),
    "stage_adds_callback": ("stages:\n  - name: a\n    overrides: ['+hydra.callbacks.x._target_=builtins.print']\n",
                            ["stages[0].overrides[0]"]),
    "stage_selects_hydra_group": ("stages:\n  - name: a\n    overrides: ['hydra/job_logging=default']\n",
                                  ["stages[0].overrides[0]"]),
    "package_hydra": ("# @package hydra\njob:\n  env_set:\n    X: '1'\n", ["@package"]),
    "not_utf8": (b"run_name: caf\xe9\n", ["not UTF-8"]),
    "huge_file": ("run_name: x\n" + "# padding\n" * 120_000, ["bytes"]),
}

# Values that pass the file check but are refused by the schema: they reach a path, a shell, a log line or a tracker.
HOSTILE_VALUES = {
    "run_name_traversal": ("run_name: ../../../{home_rel}/x\n", ["run_name"]),
    "run_name_command": ("run_name: 'team$(touch {created})'\n", ["run_name"]),
    "run_name_newline": ("run_name: \"a\\nb\"\n", ["run_name"]),
    "run_name_ansi": ("run_name: \"\\e[2Jfake\"\n", ["run_name"]),
    "logger_project_escape": ("logger:\n  project: \"x\\e]0;title\\a\"\n", ["logger.project", "control"]),
    "data_path_nul": ("data:\n  train:\n    x:\n      path: \"a\\0b.jsonl\"\n", ["data.train.x.path", "control"]),
    "tags_newline": ("logger:\n  tags: [\"a\\nINFO fake line\"]\n", ["logger.tags[0]", "control"]),
    "unknown_key": ("objective:\n  beta: 0.1\ntrain:\n  bogus_key: 1\n", ["bogus_key"]),
}


def write_recipe(root: Path, name: str, text, home: Path) -> Path:
    path = root / "evil" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
        return path
    fill = {"created": home / "created", "canary": home / "canary.txt", "home": home,
            "home_rel": os.path.relpath(home, "/")}
    path.write_text(("# @package _global_\n" if not text.startswith("#") else "") + text.format(**fill))
    return path


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_recipe_is_refused_naming_file_and_key_and_nothing_runs(name, tmp_path, canary, capsys, monkeypatch):
    text, fragments = CORPUS[name]
    path = write_recipe(tmp_path / "recipes", name, text, canary)
    out = tmp_path / "run"
    err = run_cli([f"recipe=evil/{name}", f"output_dir={out}"], capsys, monkeypatch, tmp_path / "recipes")
    assert str(path) in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert untouched(canary) and not out.exists()


@pytest.mark.parametrize("name", sorted(HOSTILE_VALUES))
def test_hostile_values_are_refused_by_the_schema_naming_the_key(name, tmp_path, canary, capsys, monkeypatch):
    text, fragments = HOSTILE_VALUES[name]
    write_recipe(tmp_path / "recipes", name, text, canary)
    out = tmp_path / "run"
    err = run_cli([f"recipe=evil/{name}", f"output_dir={out}"], capsys, monkeypatch, tmp_path / "recipes")
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert untouched(canary) and not out.exists()


def test_corpus_covers_at_least_fifteen_vectors():
    assert len(CORPUS) + len(HOSTILE_VALUES) >= 30


def test_a_refused_recipe_does_not_break_the_others(tmp_path, canary, capsys, monkeypatch):
    write_recipe(tmp_path / "recipes", "callbacks_open", CORPUS["callbacks_open"][0], canary)
    (tmp_path / "recipes" / "mine").mkdir()
    (tmp_path / "recipes" / "mine" / "ok.yaml").write_text(
        "# @package _global_\nrun_name: mine\nmodel:\n  name_or_path: ${asset:data/tiny-llama}\n")
    monkeypatch.setenv("ALIGN_TRAIN_RECIPES", str(tmp_path / "recipes"))
    register_recipes()
    assert compose_config("recipe=mine/ok").run_name == "mine"


def test_sweep_values_are_the_one_hydra_setting_a_recipe_may_make(tmp_path, canary, monkeypatch, capsys):
    """hydra.sweeper.params: the sweep a recipe documents; a --multirun runs exactly those values."""
    path = write_recipe(tmp_path / "recipes", "sweep", "run_name: sweep\nhydra:\n  sweeper:\n    params:\n"
                        "      objective.beta: 0.05,0.2\ntrain:\n  max_steps: 1\n", canary)
    from align_train.recipes import check_file

    assert check_file(path, recipe=True) == []
    out = subprocess.run([sys.executable, "-m", "align_train", "--multirun", "recipe=evil/sweep",
                          f"output_dir={tmp_path / 'sweep'}", "eval=none", "data.max_eval_rows=8"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "ALIGN_TRAIN_RECIPES": str(tmp_path / "recipes")})
    assert out.returncode == 0, out.stderr[-2000:]
    betas = [yaml.safe_load((tmp_path / "sweep" / str(i) / "config.yaml").read_text())["objective"]["beta"]
             for i in (0, 1)]
    assert betas == [0.05, 0.2] and untouched(canary)


# --------------------------------------------------------------------------- the three exploits, end to end


def launch(argv: list[str], cwd: Path, recipes: Path | None = None, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, **env}
    if recipes is not None:
        environ["ALIGN_TRAIN_RECIPES"] = str(recipes)
    return subprocess.run([sys.executable, "-m", "align_train", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=180, env=environ)


@pytest.mark.parametrize("name", ["env_set_git_fsmonitor", "callbacks_open"])
def test_the_reported_hydra_exploits_no_longer_run(name, tmp_path, canary):
    write_recipe(tmp_path / "recipes", name, CORPUS[name][0], canary)
    out = launch([f"recipe=evil/{name}", f"output_dir={tmp_path / 'run'}"], tmp_path, tmp_path / "recipes")
    assert out.returncode == 2 and "refused" in out.stderr, out.stderr[-2000:]
    assert untouched(canary) and not (tmp_path / "run").exists()


def test_config_dir_is_checked_like_a_recipe_directory(tmp_path, canary, capsys, monkeypatch):
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "evil.yaml").write_text(
        f"# @package _global_\nhydra:\n  callbacks:\n    x:\n      _target_: builtins.open\n"
        f"      _args_: ['{canary / 'canary.txt'}', w]\n")
    err = run_cli(["--config-dir", str(conf), "model=evil", f"output_dir={tmp_path / 'run'}"], capsys, monkeypatch)
    assert str(conf / "model" / "evil.yaml") in err and "hydra.callbacks" in err
    (conf / "model" / "evil.yaml").unlink()
    (conf / "hydra" / "job_logging").mkdir(parents=True)
    (conf / "hydra" / "job_logging" / "x.yaml").write_text("version: 1\n")
    err = run_cli(["-cd", str(conf), f"output_dir={tmp_path / 'run'}"], capsys, monkeypatch)
    assert "Hydra's own config groups" in err and untouched(canary)


@pytest.mark.parametrize("flag", ["--experimental-rerun", "--config-path", "--config-name", "-cn"])
def test_flags_that_load_other_code_or_configs_are_refused(flag, tmp_path, capsys, monkeypatch):
    err = run_cli([flag, str(tmp_path / "config.pickle")], capsys, monkeypatch)
    assert flag in err and "not supported" in err


def test_the_command_line_stays_the_users_own():
    """Hydra settings typed by the user are theirs: the checks cover files, not the command line."""
    cfg = compose_config("+hydra.job.env_set.MY_VAR=1")
    assert cfg.run_name == "tiny-dpo"


def test_adding_a_key_with_plus_is_refused_with_our_hint(tmp_path, capsys, monkeypatch):
    err = run_cli(["+objective.bogus_key=1", f"output_dir={tmp_path / 'run'}"], capsys, monkeypatch)
    assert "objective.bogus_key" in err and "closed" in err
    err = run_cli(["objective.bogus_key=1", f"output_dir={tmp_path / 'run'}"], capsys, monkeypatch)
    assert "bogus_key" in err and "To append to your config use" not in err and "closed" in err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- subprocesses no recipe can steer


def test_git_provenance_runs_no_configured_command(tmp_path, monkeypatch):
    """Hostile GIT_* variables in the environment and a hostile repository config: the commit is still read
    (from the files) and nothing runs."""
    from align_train.processes import git_provenance, read_commit

    created = tmp_path / "created"
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=a@b", "-c", "user.name=a", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "f.txt").write_text("x\n")
    subprocess.run([*git, "add", "f.txt"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=repo, check=True)
    expected = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    (repo / "f.txt").write_text("changed\n")
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "core.fsmonitor")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", f"touch {created}")
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "nowhere"))
    assert read_commit(repo) == expected
    assert git_provenance(repo) == {"commit": expected, "dirty": True}
    assert not created.exists()
    # A repository whose own config names an fsmonitor hook: still nothing runs.
    with (repo / ".git" / "config").open("a") as handle:
        handle.write(f"[core]\n\tfsmonitor = touch {created}\n")
    assert git_provenance(repo)["commit"] == expected and not created.exists()
    # Filters could run on `git status`: the dirty flag is then not checked at all.
    with (repo / ".git" / "config").open("a") as handle:
        handle.write(f'[filter "x"]\n\tclean = touch {created}\n')
    assert git_provenance(repo) == {"commit": expected, "dirty": None} and not created.exists()


def test_cluster_tools_get_the_startup_environment(monkeypatch):
    from align_train import processes

    monkeypatch.setenv("SET_LATER_BY_A_RUN", "x")
    out = processes.run_tool([sys.executable, "-c", "import os; print(os.environ.get('SET_LATER_BY_A_RUN'))"])
    assert out.stdout.strip() == "None"


# --------------------------------------------------------------------------- job scripts quote every value

STUBS = {
    "srun": '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nSLURM_NODEID=0 exec "$@"\n',
    "scontrol": '#!/bin/bash\n[ "$1 $2" = "show hostnames" ] && echo node0\nexit 0\n',
    "accelerate": f'#!{sys.executable}\nimport json, os, sys\n'
                  'open(os.environ["ARGV_LOG"], "a").write(json.dumps(sys.argv[1:]) + "\\n")\n',
}
HOSTILE = "$(touch {c})`touch {c}`;touch {c} && touch {c} | \"q'q\" ${{HOME}} \\ * ?"


def run_script(script: str, tmp_path: Path) -> list[list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in STUBS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "job.sbatch").write_text(script)
    log = tmp_path / "argv.jsonl"
    out = subprocess.run(["bash", str(tmp_path / "job.sbatch")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env={"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "4242",
                                          "SLURM_JOB_NODELIST": "node0", "ARGV_LOG": str(log), "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_rendered_job_script_passes_hostile_values_verbatim_and_runs_nothing(tmp_path):
    from align_train.launch.slurm import SlurmJob, render

    created = tmp_path / "created"
    hostile = HOSTILE.format(c=created)
    job = SlurmJob(nodes=1, gpus_per_node=2, accelerate_config=f"/tmp/conf {hostile}.yaml",
                   launcher=f"accelerate launch --dynamo_backend {shlex.quote(hostile)}",
                   job_name="j$(touch${IFS}x)", partition="p`id`", account="a;b", qos="q|r",
                   log_dir=f"{tmp_path}/logs$(id)", time="1:00:00$(id)", sbatch_args=["--comment=$(touch${IFS}x)"])
    overrides = [f"model.name_or_path={hostile}", "run_name=tiny-dpo", f"data.train.x.path={hostile}\nsecond line",
                 "objective.beta=0.1"]
    calls = run_script(render(job, overrides, "tiny-dpo"), tmp_path)
    assert not created.exists() and not (tmp_path / "x").exists()
    assert calls == [["launch", "--dynamo_backend", hostile, "--machine_rank", "0",
                      "--config_file", f"/tmp/conf {hostile}.yaml", "--num_machines", "1", "--num_processes", "2",
                      "--main_process_ip", "node0", "--main_process_port", "29500", "-m", "align_train", *overrides,
                      "output_dir=runs/tiny-dpo/slurm-4242", "resume=true"]]


@pytest.mark.parametrize("key,value", [("job_name", "a\nrm -rf /"), ("partition", "gpu\n#SBATCH --x"),
                                       ("account", "a b"), ("qos", "q\x00"), ("log_dir", "logs\rx"),
                                       ("time", "1:00\n"), ("sbatch_args", ["--x=a\nb"])])
def test_values_an_sbatch_line_cannot_carry_are_refused_naming_the_key(key, value):
    from align_train.launch.slurm import SlurmJob, render

    with pytest.raises(ConfigError) as err:
        render(SlurmJob(**{key: value}), [], "tiny-dpo")
    assert key in str(err.value)


def test_a_hostile_run_name_never_reaches_the_job_script(tmp_path, capsys, monkeypatch):
    from align_train.cli.launch import main
    from align_train.launch.slurm import SlurmJob, render

    with pytest.raises(ConfigError, match="run_name"):
        render(SlurmJob(), [], "team\n$(touch x)")
    monkeypatch.chdir(tmp_path)
    for value in ("team$(touch x)", "'team;touch x'"):
        with pytest.raises(SystemExit) as exit_:
            main(["slurm", "recipe=tiny/dpo", "nodes=1", "gpus_per_node=2", f"run_name={value}", "--dry-run"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "run_name" in err and not (tmp_path / "x").exists(), err


# --------------------------------------------------------------------------- run directories from strangers


def test_align_eval_ignores_a_run_directorys_trust_remote_code(tmp_path, capsys):
    from omegaconf import OmegaConf

    from align_train.cli.evaluate import run_config

    cfg = compose_config("model.trust_remote_code=true", output_dir=str(tmp_path))
    OmegaConf.save(cfg, tmp_path / "config.yaml", resolve=True)
    assert run_config(tmp_path).model.trust_remote_code is False
    assert "ignores" in capsys.readouterr().err
    assert run_config(tmp_path, trust_remote_code=True).model.trust_remote_code is True


def test_pickled_adapter_weights_are_never_loaded(tmp_path):
    from align_train.cli.evaluate import load_for_eval

    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x", "peft_type": "LORA"}))
    (tmp_path / "adapter_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ConfigError, match="adapter_model.safetensors"):
        load_for_eval(str(tmp_path), compose_config().model)


def test_udm_embedding_model_loads_safetensors_only(tmp_path):
    from align_train.errors import DataError
    from align_train.objectives.udm import load_embedding_model

    source = PROJECT_ROOT / "data" / "tiny-llama"
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    (tmp_path / "pytorch_model.bin").write_bytes(b"a pickle would be here")
    with pytest.raises(DataError, match="embedding_model"):
        load_embedding_model(str(tmp_path))


def test_shipped_recipes_and_configs_pass_the_untrusted_checks():
    from align_train.paths import RECIPES_DIR
    from align_train.recipes import check_file

    for path in sorted(RECIPES_DIR.rglob("*.yaml")):
        assert check_file(path, recipe=True) == [], path
    loaded = yaml.safe_load((PROJECT_ROOT / "conf" / "config.yaml").read_text())
    assert loaded["hydra"]["output_subdir"] is None, "Hydra writes nothing before the run owns its directory"
