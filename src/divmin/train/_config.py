"""Train configs: the fields every trainable method shares, YAML loading, and the commented example.

A method's config class subclasses the trainer's own config dataclass (``DistillConfig``,
``FDPOConfig``...) and adds the model / data fields, so a YAML file or ``--set`` reaches every
key of the trainer with the trainer's own checks and messages, plus::

    model: Qwen/Qwen2.5-0.5B     # Hugging Face name or local path; null = the tiny offline default
    data: data/train.jsonl       # JSONL, CSV or a `datasets` directory; null = the tiny default data
    lora: {r: 8, alpha: 16}      # LoRA via peft (r: 0 = full fine-tuning)
    engine: {max_steps: 100}     # the training loop (nested keys, as `divmin run`)

Loading: ``yaml.safe_load`` (no object tags), then every key is applied as one override
through :func:`divmin.engine._overrides.apply_values` (the code path of ``--set``), so a
YAML file and the equivalent ``--set key=value`` give the same config and the same errors.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..engine import Bool, Instance, Int, Number, OneOf, Text, Tuple, field_docs, validate
from ..engine import PLUMBING_KEYS, shown_doc
from ..engine import apply_values, jsonable, parse_overrides

__all__ = ["LoraSettings", "load_config", "example_config", "flatten", "to_yaml"]


@dataclasses.dataclass
class LoraSettings:
    """LoRA adapters (peft ``LoraConfig``); ``r: 0`` trains every weight instead."""

    r: int = 0  # adapter rank; 0 = no LoRA (full fine-tuning)
    alpha: float = 16.0  # LoRA scaling numerator (lora_alpha); the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the adapter input (lora_dropout)
    target_modules: tuple[str, ...] | None = None  # module names to adapt, e.g. [q_proj, v_proj]; null = peft's default for the architecture

    CHECKS = dict(r=Int(ge=0), alpha=Number(gt=0), dropout=Number(ge=0, lt=1),
                  target_modules=Tuple(each=Text(), min_len=1, optional=True))

    def __post_init__(self) -> None:
        validate(self)


# checks of the fields that train configs share (see `_methods`)
DTYPES = ("float32", "bfloat16", "float16", "auto")  # `torch_dtype` of named models
_PATH = Instance((str, Path), optional=True)  # a Hugging Face name or a local path
SOURCE_CHECKS = dict(
    model=_PATH, tokenizer=_PATH, data=_PATH, eval_data=_PATH, lora=Instance(LoraSettings), merge_lora=Bool(),
    torch_dtype=OneOf(DTYPES), trust_remote_code=Bool(),
)


def flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``{"engine": {"max_steps": 3}}`` -> ``[("engine.max_steps", 3)]`` (lists stay values)."""
    if not isinstance(tree, dict):
        return [(prefix.rstrip("."), tree)]
    out = []
    for key, value in tree.items():
        if not isinstance(key, str):
            raise ValueError(f"config key {key!r} must be a string")
        if isinstance(value, dict):  # a section (an empty one changes nothing)
            out += flatten(value, f"{prefix}{key}.") if value else []
        else:
            out.append((prefix + key, value))
    return out


def load_config(config_cls: type, path: str | Path | None = None, overrides: Sequence[str] = (), *,
                base: Any = None) -> Any:
    """``base`` (default ``config_cls()``) updated by the YAML file at ``path`` (if any), then by
    ``key=value`` overrides."""
    config = config_cls() if base is None else base
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"--config {path}: no such file")
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ValueError(f"--config {path}: not valid YAML{where}") from None
        if tree is not None and not isinstance(tree, dict):
            raise ValueError(f"--config {path}: must hold a mapping of config keys, got {type(tree).__name__}")
        config = apply_values(config, flatten(tree or {}), source=path.name)
    return parse_overrides(config, overrides)


def _scalar(value: Any) -> str:
    return yaml.safe_dump(jsonable(value), default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of about ``width``; a last word or two is kept on the line before (alone on
    a line of its own, "# teacher" read as a second comment)."""
    lines = textwrap.wrap(text, width)
    if len(lines) > 1 and len(lines[-1]) < 24:
        lines = textwrap.wrap(text, width + len(lines[-1]) + 1)
    return lines


def _lines(config: Any, indent: str, first: Sequence[str]) -> list[str]:
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
            out += _lines(value, indent + "  ", ())
        else:
            out.append(f"{indent}{name}: {_scalar(value)}")
    return out


def example_config(config: Any, header: str, first: Sequence[str] = ()) -> str:
    """A commented YAML file of every key of ``config`` (its values), ``first`` keys on top."""
    head = [f"# {line}" if line else "#" for line in header.splitlines()]
    return "\n".join(head + _lines(config, "", first)) + "\n"


def to_yaml(config: Any) -> str:
    """The config as plain YAML (what a run records in ``RUN_DIR/train_config.yaml``)."""
    return yaml.safe_dump(jsonable(config), sort_keys=False)
