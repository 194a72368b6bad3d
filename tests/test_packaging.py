"""align-train installs like a package: the wheel carries conf/, recipes/, data/ and launch/ as package data, the
installed layout finds them from any directory, and eval=safety finds its public datasets without a shared folder.

(CI also installs the wheel in a scratch venv and trains from a temporary directory: .ci/run.)
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from align_train import paths

ROOT = Path(__file__).resolve().parent.parent


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_is_in_the_wheel_list():
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    found = {".".join(p.relative_to(ROOT).parent.parts) for p in (ROOT / "align_train").rglob("__init__.py")}
    assets = {f"align_train._assets.{name}" for name in paths.ASSET_FOLDERS}
    assert listed == found | assets, f"pyproject.toml packages: add {sorted(found - listed)}, drop {sorted(listed - found - assets)}"
    mapped = pyproject()["tool"]["setuptools"]["package-dir"]
    assert mapped == {f"align_train._assets.{name}": name for name in paths.ASSET_FOLDERS}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds, from a copy of the files a build reads (the checkout stays untouched)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("align_train", *paths.ASSET_FOLDERS):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "--wheel-dir", str(out), str(src)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "No module named" in done.stderr and "setuptools" in done.stderr:
        pytest.skip("setuptools is not installed: the wheel cannot be built offline here")
    assert done.returncode == 0, done.stderr[-2000:]
    (built,) = out.glob("align_train-*.whl")
    return built


def test_the_wheel_carries_the_assets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    prefix = "align_train/_assets/"
    for folder in paths.ASSET_FOLDERS:
        shipped = {str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("*") if p.is_file()
                   and "__pycache__" not in p.parts}
        missing = sorted(f for f in shipped if prefix + f not in names)
        assert not missing, f"not in the wheel: {missing[:10]}"
    assert "align_train/cli/train.py" in names and "align_train/tuning/nest/strategy.py" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for command in ("align-train", "align-eval", "align-data", "align-launch"):
        assert re.search(rf"^{command} = align_train\.cli\.", entry_points, re.M), command


def test_the_installed_layout_runs_from_any_directory(wheel, tmp_path):
    """The unpacked wheel alone (no checkout on the path) composes the default run and eval=safety from elsewhere."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import align_train.paths as p, json\n"
        "from align_train.composition import compose, setup\n"
        "from omegaconf import OmegaConf\n"
        "setup()\n"
        "cfg = compose(['eval=safety', 'output_dir=run'])\n"
        "print(json.dumps({'installed': p.is_installed_layout(), 'root': str(p.ASSETS_ROOT),\n"
        "  'model': cfg.model.name_or_path, 'data': cfg.data.train.tiny_preference.path,\n"
        "  'refusal': cfg.eval.refusal.prompts.path, 'over_refusal': cfg.eval.over_refusal.prompts.path,\n"
        "  'recipes': str(p.RECIPES_DIR)}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("ALIGN_TRAIN_HOME", "ALIGN_TRAIN_SHARED")}
    env["PYTHONPATH"] = str(site)
    done = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    found = json.loads(done.stdout.strip().splitlines()[-1])
    assets = site / "align_train" / "_assets"
    assert found["installed"] and Path(found["root"]) == assets
    assert Path(found["model"]) == assets / "data" / "tiny-llama" and (Path(found["model"]) / "model.safetensors").is_file()
    assert Path(found["data"]) == assets / "data" / "tiny" / "preference.jsonl"
    assert Path(found["refusal"]) == assets / "data" / "datasets" / "advbench_harmful_behaviors.csv"
    assert Path(found["over_refusal"]) == assets / "data" / "datasets" / "xstest_prompts.csv"
    assert (Path(found["recipes"]) / "tiny" / "dpo.yaml").is_file()


# --------------------------------------------------------------------------- the public evaluation sets


def test_shared_prefers_the_shared_folder_and_falls_back_to_the_shipped_copy(tmp_path, monkeypatch):
    name = "datasets/xstest_prompts.csv"
    monkeypatch.setenv("ALIGN_TRAIN_SHARED", str(tmp_path / "empty"))
    assert Path(paths.shared(name)) == paths.BUNDLED_DATASETS / "xstest_prompts.csv"
    (tmp_path / "own" / "datasets").mkdir(parents=True)
    (tmp_path / "own" / name).write_text("id,prompt\n")
    monkeypatch.setenv("ALIGN_TRAIN_SHARED", str(tmp_path / "own"))
    assert Path(paths.shared(name)) == tmp_path / "own" / name
    # A file in neither place: the shared path, so the error that follows names where it was expected.
    assert Path(paths.shared("datasets/nothing.csv")) == tmp_path / "own" / "datasets" / "nothing.csv"


def test_shipped_datasets_match_their_provenance_and_carry_their_licences():
    readme = (paths.BUNDLED_DATASETS / "README.md").read_text()
    for name, licence, words in (("advbench_harmful_behaviors.csv", "LICENSE-advbench.txt", "MIT License"),
                                 ("xstest_prompts.csv", "LICENSE-xstest.txt", "CC-BY-4.0")):
        data = (paths.BUNDLED_DATASETS / name).read_bytes()
        section = readme.split(f"## `{name}`")[1]
        recorded = re.search(r"SHA-256 `([0-9a-f]{64})`", section).group(1)
        assert hashlib.sha256(data).hexdigest() == recorded, name
        assert f"{len(data):,} bytes" in section
        assert words in (paths.BUNDLED_DATASETS / licence).read_text()
    rows = (paths.BUNDLED_DATASETS / "xstest_prompts.csv").read_text().splitlines()
    assert rows[0] == "id,prompt,type,label,focus,note"
    assert (paths.BUNDLED_DATASETS / "advbench_harmful_behaviors.csv").read_text().splitlines()[0] == "goal,target"
