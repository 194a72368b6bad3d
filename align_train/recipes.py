"""Recipes are untrusted input: every YAML file a stranger can hand us is read as data, never code.

Recipes arrive in pull requests and shared directories (``ALIGN_TRAIN_RECIPES``, Hydra's
``--config-dir``). Hydra acts on some nodes by itself before align-train sees the config:
it instantiates ``hydra.callbacks``, exports ``hydra.job.env_set`` to every subprocess, and
follows a defaults list wherever it points. So before Hydra composes anything, each such file
is checked here and refused, naming the file and the key, when it

- sets anything under ``hydra:`` other than sweep values (``hydra.sweeper.params``), or selects
  a Hydra config group (``/hydra/...``) in its defaults list;
- has an instantiation key (``_target_``, ``_call_``, ``_partial_``, ``_args_``, ...) anywhere;
- interpolates through a resolver other than ``${asset:...}`` and ``${shared:...}`` (which only
  name files shipped with align-train): ``${oc.env:...}`` would read the environment;
- points its defaults list (or a pipeline stage) outside the config tree (``..``, absolute paths);
- uses YAML tags, aliases that expand to a huge or recursive document, or is larger than 1 MiB.

The command line stays the user's own: none of this applies to overrides typed there.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from align_train.errors import ConfigError

MAX_BYTES = 1 << 20  # a recipe is a page of settings, not a data file
MAX_NODES = 20_000  # YAML nodes after expanding aliases (a "billion laughs" document expands far beyond)
MAX_DEPTH = 64
INSTANTIATE_KEYS = ("_target_", "_call_", "_partial_", "_args_", "_recursive_", "_convert_")
ALLOWED_RESOLVERS = ("asset", "shared")
# The one Hydra node a recipe may set: the values a --multirun sweeps over.
ALLOWED_HYDRA = ("sweeper", "params")
STANDARD_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq",
                                                    "timestamp", "binary", "merge")}
OPTION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@/-]*$")


class RecipeRefused(ConfigError):
    """A recipe or config file that could act as code; the message names the file and the key."""


@dataclass(frozen=True)
class Problem:
    key: str
    why: str


# --------------------------------------------------------------------------- YAML structure


def _check_yaml_structure(text: str) -> list[Problem]:
    """Tags, alias expansion and depth, read from the node graph (nothing constructed, nothing expanded)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        return [Problem("(file)", f"not valid YAML: {err}".replace("\n", " "))]
    if root is None:
        return []
    problems: list[Problem] = []
    budget = [MAX_NODES]

    def visit(node, path: str, ancestors: tuple) -> None:
        if problems:
            return
        if any(node is a for a in ancestors):
            problems.append(Problem(path or "(root)", "a YAML alias refers to a node that contains it (recursive)"))
            return
        if len(ancestors) > MAX_DEPTH:
            problems.append(Problem(path, f"nested deeper than {MAX_DEPTH} levels"))
            return
        budget[0] -= 1
        if budget[0] < 0:
            problems.append(Problem(path or "(root)", f"expands to more than {MAX_NODES} YAML nodes (aliases?)"))
            return
        if node.tag not in STANDARD_TAGS:
            problems.append(Problem(path or "(root)", f"YAML tag '{node.tag}' is not allowed (plain values only)"))
            return
        if isinstance(node, yaml.MappingNode):
            for key_node, value in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                visit(key_node, path, ancestors + (node,))
                visit(value, f"{path}.{key}" if path else str(key), ancestors + (node,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                visit(item, f"{path}[{i}]", ancestors + (node,))

    visit(root, "", ())
    return problems


# --------------------------------------------------------------------------- content


def resolvers_in(value: str) -> list[str]:
    """The resolver names an OmegaConf string interpolates through (``${oc.env:X}`` -> ``oc.env``)."""
    if "${" not in value:
        return []
    from antlr4.tree.Tree import TerminalNode
    from omegaconf import grammar_parser
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser

    try:
        tree = grammar_parser.parse(value, parser_rule="configValue")
    except Exception:  # a malformed interpolation: treat it as one to refuse
        return ["(unparsable interpolation)"]
    names: list[str] = []

    def walk(node) -> None:
        if isinstance(node, OmegaConfGrammarParser.InterpolationResolverContext):
            names.append(node.resolverName().getText())
        for i in range(node.getChildCount()):
            child = node.getChild(i)
            if not isinstance(child, TerminalNode):
                walk(child)

    walk(tree)
    return names


def _leaves(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) of every entry of a plain YAML tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            yield child, key, value
            yield from _leaves(value, child)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            child = f"{path}[{i}]"
            yield child, None, value
            yield from _leaves(value, child)


def check_interpolations(value: str, key: str) -> list[Problem]:
    bad = [name for name in resolvers_in(value) if name not in ALLOWED_RESOLVERS]
    if not bad:
        return []
    return [Problem(key, f"interpolation through {', '.join(sorted(set(bad)))} is not allowed in a recipe (only "
                         f"${{{ALLOWED_RESOLVERS[0]}:...}}, ${{{ALLOWED_RESOLVERS[1]}:...}} and references to other "
                         "keys); put environment-dependent values on the command line")]


def _is_hydra_target(name: str) -> bool:
    """An override key or defaults entry that reaches Hydra's own config (hydra.x, hydra/x, /hydra/x)."""
    head = re.split(r"[./@:]", name.lstrip("+~/"), maxsplit=1)[0]
    return head == "hydra"


def check_option(value: Any, key: str) -> list[Problem]:
    """A defaults-list option: a plain name inside the config tree."""
    values = value if isinstance(value, list) else [value]
    problems = []
    for option in values:
        if option is None:
            continue
        text = str(option)
        if not OPTION.match(text) or ".." in text.split("/"):
            problems.append(Problem(key, f"option '{text}' must be a config name inside the config tree "
                                         "(letters, digits, '_', '-', '.', '/'; no '..' and no absolute path)"))
    return problems


def check_defaults(defaults: Any, file_key: str = "defaults") -> list[Problem]:
    if not isinstance(defaults, list):
        return [Problem(file_key, "a defaults list must be a list")]
    problems = []
    for i, entry in enumerate(defaults):
        key = f"{file_key}[{i}]"
        if isinstance(entry, str):
            if entry == "_self_":
                continue
            if _is_hydra_target(entry):
                problems.append(Problem(key, f"'{entry}' selects a Hydra config; a recipe may not"))
            problems += check_option(entry.lstrip("/"), key)
        elif isinstance(entry, dict):
            for group, option in entry.items():
                name = re.sub(r"^((override|optional)\s+)+", "", str(group)).strip()
                if _is_hydra_target(name):
                    problems.append(Problem(key, f"'{group}' selects a Hydra config group; a recipe may not"))
                problems += check_option(name.lstrip("/").split("@")[0], key)
                problems += check_option(option, key)
        else:
            problems.append(Problem(key, "a defaults entry must be a string or a one-key mapping"))
    return problems


def check_override(override: str, key: str) -> list[Problem]:
    """A Hydra override written in a file (a pipeline stage's, a sweep's): never Hydra's own keys."""
    name, _, value = str(override).partition("=")
    problems = []
    if _is_hydra_target(name.strip()):
        problems.append(Problem(key, f"'{override}' sets Hydra's own config; a recipe may not"))
    if "/" in name and ".." in name.split("/"):
        problems.append(Problem(key, f"'{override}' points outside the config tree"))
    problems += check_interpolations(value, key)
    return problems


def _check_hydra_node(node: Any) -> list[Problem]:
    """Only ``hydra.sweeper.params``: a mapping of override keys to sweep values."""
    if not isinstance(node, dict):
        return [Problem("hydra", "a recipe may set only hydra.sweeper.params (the values a --multirun sweeps)")]
    problems = []
    for key, value in node.items():
        if key != ALLOWED_HYDRA[0] or not isinstance(value, dict) or set(value) != {ALLOWED_HYDRA[1]}:
            where = f"hydra.{key}" + (f".{next(iter(value))}" if isinstance(value, dict) and value and
                                      key == ALLOWED_HYDRA[0] else "")
            problems.append(Problem(where, "a recipe may set only hydra.sweeper.params (the values a --multirun "
                                           "sweeps); everything else of Hydra's is the command line's"))
            continue
        params = value[ALLOWED_HYDRA[1]]
        if not isinstance(params, dict):
            problems.append(Problem("hydra.sweeper.params", "must map override keys to sweep values"))
            continue
        for param, sweep in params.items():
            where = f"hydra.sweeper.params.{param}"
            problems += check_override(f"{param}={sweep if isinstance(sweep, str) else ''}", where)
            if not isinstance(sweep, (str, int, float, bool, list)) or (
                    isinstance(sweep, list) and not all(isinstance(v, (str, int, float, bool)) for v in sweep)):
                problems.append(Problem(where, "sweep values must be plain values"))
    return problems


def check_content(content: Any, global_package: bool) -> list[Problem]:
    """Keys and values of a parsed recipe or config file."""
    if content is None:
        return []
    if not isinstance(content, dict):
        return [Problem("(root)", "a recipe must be a mapping of settings")]
    problems: list[Problem] = []
    for path, key, value in _leaves(content):
        if key in INSTANTIATE_KEYS:
            problems.append(Problem(path, f"'{key}' would make Hydra call code; recipes are plain settings"))
        if isinstance(value, str):
            problems += check_interpolations(value, path)
    if "defaults" in content:
        problems += check_defaults(content["defaults"])
    if global_package and "hydra" in content:
        problems += _check_hydra_node(content["hydra"])
    stages = content.get("stages") if global_package else None
    if isinstance(stages, list):
        for i, stage in enumerate(stages):
            overrides = stage.get("overrides") if isinstance(stage, dict) else None
            for j, override in enumerate(overrides or []):
                problems += check_override(str(override), f"stages[{i}].overrides[{j}]")
    return problems


# --------------------------------------------------------------------------- files


def package_of(text: str) -> str | None:
    """The ``# @package`` header of a config file (None: the default package)."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break
        match = re.match(r"#\s*@package\s+(\S+)", stripped)
        if match:
            return match.group(1)
    return None


def check_file(path: Path, recipe: bool) -> list[Problem]:
    """Every problem of one untrusted YAML file (a recipe, or a config of a --config-dir)."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            return [Problem("(file)", f"{size:,} bytes; a recipe may have at most {MAX_BYTES:,}")]
        raw = path.read_bytes()
    except OSError as err:
        return [Problem("(file)", f"cannot be read ({err.strerror or err})")]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        return [Problem("(file)", f"not UTF-8 text (byte {err.start}: {raw[err.start:err.start + 1]!r})")]
    if "\x00" in text:
        return [Problem("(file)", "contains a NUL byte")]
    problems = _check_yaml_structure(text)
    if problems:
        return problems
    package = package_of(text)
    if package is not None and _is_hydra_target(package):
        return [Problem("# @package", f"package '{package}' writes into Hydra's own config")]
    if package is not None and package not in ("_global_", "_group_") and not re.match(r"^[A-Za-z0-9_.]+$", package):
        return [Problem("# @package", f"package '{package}' is not a plain config path")]
    content = yaml.load(text, Loader=yaml.SafeLoader)  # safe: structure checked, no tags, bounded aliases
    return check_content(content, global_package=recipe or package == "_global_")


def refuse(path: Path, problems: list[Problem]) -> RecipeRefused:
    shown = "; ".join(f"{p.key}: {p.why}" for p in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return RecipeRefused(f"{path}: refused, a recipe is plain settings: {shown}{more}")


def check_config_dir(directory: str) -> None:
    """Every YAML file of a ``--config-dir``: no Hydra group of its own, nothing that acts as code."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise ConfigError(f"--config-dir {directory}: not a directory")
    if (root / "hydra").exists():
        raise RecipeRefused(f"{root / 'hydra'}: a --config-dir may not provide Hydra's own config groups")
    for path in sorted(root.rglob("*")):
        if path.suffix in (".yaml", ".yml") and path.is_file():
            problems = check_file(path, recipe=path.relative_to(root).parts[0] == "recipe")
            if problems:
                raise refuse(path, problems)


# --------------------------------------------------------------------------- the recipe group


def recipe_dirs() -> list[Path]:
    from align_train.paths import RECIPES_DIR

    extra = [Path(p).expanduser() for p in os.environ.get("ALIGN_TRAIN_RECIPES", "").split(os.pathsep) if p]
    return [RECIPES_DIR, *extra]


# Recipes found but refused, by name: selecting one is an error that says why.
REFUSED: dict[str, RecipeRefused] = {}


def register_recipes(store=None) -> dict[str, Path]:
    """Every acceptable recipe file as an option of the ``recipe`` group (package ``_global_``).

    A refused recipe is not registered (nothing of it can be composed); selecting it raises the
    reason (``check_selected``). The first directory holding a name wins, so a shared directory
    cannot shadow a shipped recipe.
    """
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    store = store or ConfigStore.instance()
    found: dict[str, Path] = {}
    REFUSED.clear()
    for root in recipe_dirs():
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.yaml")):
            rel = path.relative_to(root).with_suffix("").as_posix()
            if rel in found or rel in REFUSED:
                continue
            if not OPTION.match(rel):
                REFUSED[rel] = RecipeRefused(f"{path}: a recipe's path must be letters, digits, '_', '-', '.', '/'")
                continue
            problems = check_file(path, recipe=True)
            if problems:
                REFUSED[rel] = refuse(path, problems)
                continue
            node = OmegaConf.load(path)
            group = "/".join(("recipe", *Path(rel).parent.parts))
            store.store(group=group, name=Path(rel).name, node=node, package="_global_", provider="align-train")
            found[rel] = path
    return found


def check_selected(overrides: list[str]) -> None:
    """Raise the reason when the command line (or a stage) selects a refused recipe."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and key.lstrip("+~") == "recipe":
            for name in value.split(","):
                if name.strip() in REFUSED:
                    raise REFUSED[name.strip()]

