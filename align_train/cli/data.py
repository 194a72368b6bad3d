"""``align-data``: the data tools, one sub-command each (``python -m align_train.cli.data`` works too).

    align-data inspect FILE|DIR|HUB_ID [format=...] [split=...] [tokenizer=...] [max_length=...]
    align-data convert FILE|DIR|HUB_ID out=FILE.jsonl [format=...] [to=feedback] [skip_invalid_rows=true]
    align-data spec-docs spec=... n=... out=... [generator=template|model|openai] [seed=...]

Arguments are ``key=value`` (OmegaConf dot-list, checked against the command's settings, so a wrong key or
type names the key); the source may come first without ``source=``.
"""

from __future__ import annotations

import json
import sys

COMMANDS = {
    "inspect": "the detected layout and format, row counts, token lengths, a rendered example, every problem",
    "convert": "write a source's rows in their normalised form (JSON Lines), optionally converted",
    "spec-docs": "synthetic documents about a model spec, for objective=midtrain",
}


def parse_args(schema, argv: list[str]):
    """``[SOURCE] key=value ...`` into the command's dataclass; ConfigError names a wrong key or value."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from align_train.errors import ConfigError

    argv = list(argv)
    if argv and "=" not in argv[0]:
        argv[0] = f"source={json.dumps(argv[0])}"
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise ConfigError(f"arguments are key=value after the source; got {bad} "
                          f"(keys: {', '.join(schema.__dataclass_fields__)})")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(argv))
        for key in ("source", "out"):
            if key in merged and OmegaConf.is_missing(merged, key):
                raise ConfigError(f"{key}=... is required" + (" (or give the source first)" if key == "source" else ""))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(str(err).splitlines()[0] + f" (key: {getattr(err, 'full_key', '?')})") from err


def inspect(argv: list[str]) -> dict:
    import datasets

    from align_train.data.inspect import InspectArgs, inspect_source, render_inspection

    datasets.disable_progress_bars()
    args = parse_args(InspectArgs, argv)
    found = inspect_source(args)
    print(render_inspection(found, args.max_problems), flush=True)
    return found


def convert(argv: list[str]) -> dict:
    import datasets

    from align_train import console
    from align_train.data.inspect import ConvertArgs, convert_source

    datasets.disable_progress_bars()
    done = convert_source(parse_args(ConvertArgs, argv))
    console.log(f"{done['written']} {done['format']} rows ({done['layout']} layout, {done['rows']} read) -> "
                f"{done['out']}" + (f"; {len(done['skipped'])} invalid row(s) left out:" if done["skipped"] else ""))
    for problem in done["skipped"]:
        console.log(f"  {problem}")
    return done


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        lines = "\n".join(f"  {name:<10} {what}" for name, what in COMMANDS.items())
        print(f"usage: align-data COMMAND [SOURCE] key=value ...\n\ncommands:\n{lines}", file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    from align_train.cli.errors import run_command

    if argv[0] == "spec-docs":
        from align_train.cli.spec_docs import spec_docs as command
    else:
        command = {"inspect": inspect, "convert": convert}[argv[0]]
    run_command(f"align-data {argv[0]}", command, argv[1:])


if __name__ == "__main__":
    main()
