"""The docs cannot drift from the code: every align-train command in README.md and docs/ composes and passes the
config checks (as ``--cfg job`` would), every align-launch command renders its job script, and every link
between the pages resolves."""

from __future__ import annotations

import re
import shlex

import pytest

from align_train.paths import PROJECT_ROOT

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"(^|\s)(align-train|align-launch slurm|-m align_train)(\s|$)")


def commands() -> list[tuple[str, str]]:
    """(page, command line) of every align-train / align-launch line of the pages' shell blocks."""
    found = []
    for page in PAGES:
        in_block, pending = False, ""
        for line in page.read_text().splitlines():
            if line.startswith("```"):
                in_block = not in_block and line.strip() in ("```bash", "```sh", "```shell")
                continue
            if not in_block:
                continue
            line = pending + line.split(" # ")[0].strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            if COMMAND.search(line) and "..." not in line:
                found.append((page.name, line))
    return found


COMMANDS = commands()


def test_the_pages_hold_commands_to_check():
    assert len(COMMANDS) >= 15 and {page for page, _ in COMMANDS} >= {"README.md", "recipes.md", "launching.md"}


@pytest.mark.parametrize("page,line", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_documented_command_composes(page, line, capsys):
    from align_train.cli.train import first_sweep_point, split_argv
    from align_train.composition import compose, setup
    from align_train.config import check_config
    from align_train.recipes import check_selected

    words = shlex.split(line)
    if "align-launch" in words:
        from align_train.cli.launch import main

        main(words[words.index("slurm"):] + ([] if "--dry-run" in words else ["--dry-run"]))
        assert capsys.readouterr().out.startswith("#!/bin/bash")
        return
    start = words.index("align-train") + 1 if "align-train" in words else words.index("align_train") + 1
    flags, overrides = split_argv(words[start:])
    setup()
    check_selected(overrides)
    cfg = compose(first_sweep_point(overrides) if "--multirun" in flags else overrides)
    check_config(cfg)


def test_links_between_pages_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            assert (page.parent / target).exists(), f"{page.name}: link to {target}"


def test_readme_is_a_front_door():
    text = (PROJECT_ROOT / "README.md").read_text()
    assert len(text) < 16_000, "reference material belongs in docs/"
    assert "make run" in text and "make test" in text
    for page in sorted((PROJECT_ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in text, f"README does not link {page.name}"
