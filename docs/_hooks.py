"""MkDocs hook: the family table of docs/family.md, written from the registry at build time.

A page marks the spot with ``<!-- divmin:family-table -->`` (f-divergences) or
``<!-- divmin:other-kinds-table -->`` (the other kinds). Everything in the tables is read
off the registry: names, kinds, parameters with their defaults, the probes ``h_bounded``,
``behaviour`` and the capabilities, and f, g, h as each member's docstring states them.
A member whose docstring does not state f, g and h fails ``mkdocs build --strict``
(a warning), so the table cannot drift from the code.

It also puts the math renderer into the site: MathJax's ``tex-svg-full.js`` (one file, every
TeX extension and the SVG fonts built in) copied from the installed ``django-static-mathjax``
package (the ``docs`` extra), so formulas typeset offline and no page loads a script from a CDN.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import re
import sys
from pathlib import Path

log = logging.getLogger("mkdocs.plugins.divmin_family")

_SRC = Path(__file__).resolve().parent.parent / "src"
MATHJAX_URI = "assets/mathjax/tex-svg-full.js"  # mkdocs.yml's extra_javascript names the same path
_MARKERS = {"<!-- divmin:family-table -->": "f", "<!-- divmin:other-kinds-table -->": None}

# "f(r) = ..." up to the closing backticks, or up to ", g(r)" / ";" / a sentence end
_F = re.compile(r"``f\(r\) = (.+?)``|f\(r\) = (.+?)(?:,|;|\.\s|\.$)")
_G = re.compile(r"g\(r\) = (.+?)(?:, h\(r\)|; h\(r\)| and h\b|\.\s|\.$)", re.S)
_H = re.compile(r"\bh(?:\(r\))? = (.+?)(?:\.\s|\.$|:\s)", re.S)
_M = re.compile(r"``m\(r\) = (.+?)``")  # the mixture some members write f, g and h with


def _registry():
    if str(_SRC) not in sys.path:
        sys.path.insert(0, str(_SRC))  # document this checkout, not an installed divmin
    from divmin.divergences import available_capabilities, available_divergences, divergence

    return available_capabilities, available_divergences, divergence


def _code(text: str) -> str:
    text = " ".join(text.replace("``", "").split())
    return "`" + text.replace("|", "\\|") + "`"


def _formula(pattern: re.Pattern, doc: str, what: str, name: str) -> str:
    m = pattern.search(doc)
    if m is None:
        log.warning("divmin family table: the docstring of %r states no %s", name, what)
        return "?"
    return _code(next(g for g in m.groups() if g))


def _params(member) -> str:
    fields = dataclasses.fields(member)
    return ", ".join(f"`{f.name}={getattr(member, f.name)!r}`" for f in fields) or "-"


def family_table() -> str:
    capabilities, names, divergence = _registry()
    caps = capabilities()
    head = ["name", "parameters (default)", "f(r)", "g(r) = f - r f'", "h(r) = r² f''", "h bounded",
            "behaviour", *[f"`{c}`" for c in caps]]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names("f"):
        d = divergence(name)
        doc = " ".join(inspect.getdoc(type(d)).split())
        # the docstring states g and h after f: search each from where the previous one was found
        f = _formula(_F, doc, "f(r) = ...", name)
        mix = _M.search(doc)
        if mix is not None:
            f += " with " + _code("m(r) = " + mix.group(1))
        rest = doc[doc.find("g(r)"):] if "g(r)" in doc else doc
        g = _formula(_G, rest, "g(r) = ...", name)
        h = _formula(_H, rest[3:], "h(r) = ...", name)
        ok = ["yes" if d.supports(c) else "no" for c in caps]
        rows.append(f"| `{name}` | {_params(d)} | {f} | {g} | {h} | {'yes' if d.h_bounded else 'no'} "
                    f"| {d.behaviour} | " + " | ".join(ok) + " |")
    return "\n".join(rows)


def other_kinds_table() -> str:
    _, names, divergence = _registry()
    rows = ["| name | kind | parameters (default) | what it is |", "|---|---|---|---|"]
    for name in names():
        d = divergence(name)
        if d.kind == "f":
            continue
        first = inspect.getdoc(type(d)).strip().splitlines()[0]
        rows.append(f"| `{name}` | `{d.kind}` | {_params(d)} | {_code(first)} |")
    return "\n".join(rows)


def mathjax_source() -> Path:
    """The renderer file inside the installed ``django-static-mathjax`` package (MathJax 3)."""
    try:
        import mathjax
    except ImportError as err:
        raise RuntimeError("the docs need MathJax from the `docs` extra: pip install -e '.[docs]' "
                           "(django-static-mathjax)") from err
    path = Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5" / Path(MATHJAX_URI).name
    if not path.is_file():
        raise RuntimeError(f"django-static-mathjax has no {path.name} at {path}")
    return path


def on_files(files, config):
    from mkdocs.structure.files import File

    files.append(File.generated(config, MATHJAX_URI, abs_src_path=str(mathjax_source())))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- divmin:" not in markdown:
        return markdown
    for marker, kind in _MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, family_table() if kind == "f" else other_kinds_table())
    return markdown
