"""Griffe extension for the API reference: divmin's reST-flavoured docstrings read as Markdown.

* Doctest blocks (run by tests/test_doctests.py) sit outside any "Examples:" section; as
  plain Markdown their lines would run together into one paragraph and their outputs
  (``[0.484, 0.65, 0.038]``) would read as link references. Each block (from a ``>>>`` line
  to the next blank line) is fenced as ``pycon``, keeping its indentation.
* Sphinx roles (``:func:`x` ``, ``:class:`~a.b.C` ``, ...) become inline code ``x`` / ``C``.

The docstrings in src/ stay as they are.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|class|mod|attr|meth|data|obj|exc):`(~?)([^`]+)`")


def _role(match: re.Match) -> str:
    tilde, name = match.groups()
    return f"`{name.rsplit('.', 1)[-1] if tilde else name}`"  # ~ shows the last component, as in Sphinx


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
        if obj.docstring is None:
            return
        text = _ROLE.sub(_role, obj.docstring.value)
        obj.docstring.value = fence_doctests(text) if ">>>" in text else text
