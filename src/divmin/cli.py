"""Command line: ``divmin divergences``, and (as methods land) recipes and runs."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from .divergences import available_divergences, divergence

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def _command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        _COMMANDS[name] = fn
        return fn

    return deco


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


@_command("divergences")
def _divergences(args: argparse.Namespace) -> int:
    rows = []
    for name in available_divergences():
        d = divergence(name)
        params = ", ".join(f"{k}={v}" for k, v in d.params.items()) or "-"
        rows.append([name, params, "yes" if d.h_bounded else "no", d.behaviour])
    print(_table(["name", "parameters (default)", "h bounded", "behaviour"], rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="divmin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("divergences", help="list the divergence registry")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _COMMANDS[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
