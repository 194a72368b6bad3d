"""``align-data``: the data tools, one sub-command each (``python -m align_train.cli.data`` works too).

    align-data spec-docs spec=... n=... out=... [generator=template|model|openai] [seed=...]
"""

from __future__ import annotations

import sys

COMMANDS = {"spec-docs": "synthetic documents about a model spec, for objective=midtrain"}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        lines = "\n".join(f"  {name:<10} {what}" for name, what in COMMANDS.items())
        print(f"usage: align-data COMMAND key=value ...\n\ncommands:\n{lines}", file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    from align_train.cli.errors import run_command
    from align_train.cli.spec_docs import spec_docs

    run_command(f"align-data {argv[0]}", spec_docs, argv[1:])


if __name__ == "__main__":
    main()
