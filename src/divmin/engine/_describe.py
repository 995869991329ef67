"""A config dataclass described from its own source: each field's comment, nested keys dotted.

divmin's config dataclasses document every field with a comment, either at the end of
the field's line (recipe configs) or on the lines right above it (``EngineConfig``).
:func:`field_docs` reads those comments back, so that ``divmin recipes NAME`` and
``divmin train METHOD --print-config`` (:func:`example_config`, a commented YAML file) show
the same words as the source, and cannot drift from it.

>>> from divmin.engine import EngineConfig
>>> field_docs(EngineConfig)["seed"].startswith("Seed for python/numpy/torch RNGs")
True
>>> [key for key, _, _ in describe_config(EngineConfig())][:2]
['max_steps', 'seed']
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import re
import textwrap
import tokenize
from typing import Any, Sequence

__all__ = ["PLUMBING_KEYS", "describe_config", "example_config", "field_docs", "shown_doc"]

# fields the command line and the recipes set themselves (--out, --resume, a run's label, the bar off a
# terminal): settable, but not a user's choice, so listings of a config's keys leave them out
PLUMBING_KEYS = frozenset({"out_dir", "label", "progress", "resume"})


def _comments_by_line(source: str) -> dict[int, str]:
    """1-based line number -> the text of the comment on it (without ``#``)."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string.lstrip("#").strip()
    return out


@functools.lru_cache(maxsize=None)
def _own_field_docs(cls: type) -> dict[str, str]:
    """The comments of the fields ``cls`` itself declares (not its bases')."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # built in a REPL, or generated: no source to read
        return {}
    comments = _comments_by_line(source)
    lines = source.splitlines()
    body = ast.parse(source).body[0]
    docs = {}
    for node in getattr(body, "body", []):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        # a comment at the end of the field's own lines wins; else the block of comment lines above it
        own = [comments[n] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1) if n in comments]
        if own:
            docs[node.target.id] = " ".join(own)
            continue
        above, n = [], node.lineno - 1
        while n >= 1 and lines[n - 1].strip().startswith("#"):
            above.insert(0, comments.get(n, ""))
            n -= 1
        if above:
            docs[node.target.id] = " ".join(above)
    return docs


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its comment in the source of dataclass ``cls`` (fields of base classes included).

    A field without a comment is absent from the result.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"`cls` must be a dataclass type, got {cls!r}")
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # subclasses override their bases' words
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def describe_config(config: Any, prefix: str = "", *, user_keys: bool = False) -> list[tuple[str, Any, str]]:
    """``(dotted key, value, comment)`` for every leaf field of dataclass instance ``config``.

    A field that is itself a dataclass (``engine: EngineConfig``) is walked, its keys
    prefixed with the field name and a dot (``engine.max_steps``), as ``--set`` takes them.
    ``user_keys``: as the command line lists them, without :data:`PLUMBING_KEYS` and with the
    comment of a default that a run replaces (:func:`shown_doc`).
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"`config` must be a dataclass instance, got {type(config).__name__}")
    docs = field_docs(type(config))
    rows: list[tuple[str, Any, str]] = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            rows += describe_config(value, f"{prefix}{field.name}.", user_keys=user_keys)
        elif not user_keys:
            rows.append((prefix + field.name, value, docs.get(field.name, "")))
        elif field.name not in PLUMBING_KEYS:
            rows.append((prefix + field.name, value, shown_doc(config, field.name, docs.get(field.name, ""))))
    return rows


def shown_doc(config: Any, name: str, doc: str) -> str:
    """The comment of field ``name`` of ``config`` as a recipe or ``divmin train`` run reads it.

    ``EngineConfig.checkpoint_every``'s own default, None, means "never" to the engine; a run
    with an output directory replaces it by a quarter of the run, so say that and the number.
    """
    from ._checkpoint import default_checkpoint_every
    from ._config import EngineConfig

    if isinstance(config, EngineConfig) and name == "checkpoint_every" and config.checkpoint_every is None:
        every = default_checkpoint_every(config.max_steps, config.log_every)
        return (f"Save a checkpoint every this many steps and at the end; None = a quarter of each run, on a "
                f"log step (here every {every} of its {config.max_steps} steps).")
    return doc


def _scalar(value: Any) -> str:
    import yaml

    from ._overrides import jsonable

    return yaml.safe_dump(jsonable(value), default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of about ``width``; a last word or two is kept on the line before (alone on
    a line of its own, "# teacher" read as a second comment)."""
    lines = textwrap.wrap(text, width)
    if len(lines) > 1 and len(lines[-1]) < 24:
        lines = textwrap.wrap(text, width + len(lines[-1]) + 1)
    return lines


def _yaml_lines(config: Any, indent: str, first: Sequence[str]) -> list[str]:
    comments = field_docs(type(config))
    names = [f.name for f in dataclasses.fields(config)]
    names = [n for n in first if n in names] + [n for n in names if n not in first]
    out = []
    for name in names:
        if name in PLUMBING_KEYS:  # set by the command line (--out, --resume), not in a config file
            continue
        value = getattr(config, name)
        # the value is shown, so a comment's "Default X." (the class's own default) would mislead
        text = re.sub(r"(?<=\.)\s*Default .*$", "", shown_doc(config, name, comments.get(name, "")))
        out += [f"{indent}# {line}" for line in _wrap(text, 100 - len(indent))]
        if dataclasses.is_dataclass(value):
            out.append(f"{indent}{name}:")
            out += _yaml_lines(value, indent + "  ", ())
        else:
            out.append(f"{indent}{name}: {_scalar(value)}")
    return out


def example_config(config: Any, header: str, first: Sequence[str] = ()) -> str:
    """A commented YAML file of every key of ``config`` (its values; nested configs as indented sections),
    ``first`` keys on top, under the ``header`` lines as comments."""
    head = [f"# {line}" if line else "#" for line in header.splitlines()]
    return "\n".join(head + _yaml_lines(config, "", first)) + "\n"
