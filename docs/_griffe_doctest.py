"""Griffe extension for the API reference: doctest blocks in docstrings become ``pycon`` code blocks.

divmin's docstrings hold doctests (run by tests/test_doctests.py) outside any
"Examples:" section; as plain Markdown their lines would run together into one
paragraph and their outputs (``[0.484, 0.65, 0.038]``) would read as link references.
This fences each block (from a ``>>>`` line to the next blank line), keeping its
indentation, so it renders as code and the docstrings stay as they are.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        if not line.lstrip().startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        block = []
        while i < len(lines) and lines[i].strip():
            block.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        if out and out[-1].strip():
            out.append("")  # a fence needs a blank line before it inside a paragraph
        out += [indent + "```pycon", *(indent + b for b in block), indent + "```"]
    return "\n".join(out)


class FenceDoctests(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
