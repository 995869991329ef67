"""Export of a trained model to ``RUN_DIR/final/``, and :func:`load_exported` to get it back.

- Hugging Face models: ``save_pretrained`` (safetensors) plus the tokenizer, so that
  ``AutoModelForCausalLM.from_pretrained("RUN_DIR/final")`` loads it. A LoRA model is written
  merged into its base (``merge_lora: true``), or as the adapter alone (``adapter_config.json``,
  ``adapter_model.safetensors``; load it with ``peft.AutoPeftModelForCausalLM``).
- Other modules (f-distill generators...): ``model.safetensors`` and a ``config.json`` naming a
  registered builder and its arguments (``{"divmin_module": "mlp_generator", "args": {...}}``), from
  which :func:`load_exported` rebuilds the module.

An export is written into a fresh hidden directory beside ``final/`` and renamed to it when complete:
nothing is written through a link planted in the run directory, and a failed export leaves the
previous ``final/`` as it was.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from safetensors.torch import load_model, save_model
from torch import nn

from ..engine._safe_io import check_not_link

__all__ = ["exportable_module", "export_hf", "export_module", "load_exported"]

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def exportable_module(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``builder(**args) -> nn.Module`` under ``name``, for :func:`export_module` / :func:`load_exported`."""
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"exportable module {name!r} is already registered")
        _BUILDERS[name] = fn
        return fn

    return deco


def _written(final: Path) -> list[Path]:
    return sorted(p for p in final.rglob("*") if p.is_file())


@contextlib.contextmanager
def _new_final(run_dir: str | Path) -> Iterator[Path]:
    """A new empty directory in ``run_dir``, renamed to ``run_dir/final`` (replacing it) when the block succeeds."""
    run_dir = Path(run_dir)
    final = check_not_link(run_dir / "final")
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".final.", dir=run_dir))  # created here: holds no planted link
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        check_not_link(final)
        if final.exists():
            shutil.rmtree(final)  # removes links inside it, never what they point to
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_hf(model: nn.Module, tokenizer: Any, run_dir: str | Path, *, merge_lora: bool = False) -> list[Path]:
    """Write ``model`` (and ``tokenizer``) to ``run_dir/final`` with ``save_pretrained``; the files written.

    ``merge_lora``: a peft model is merged into its base first (on a copy: ``model`` is left as is).
    """
    if callable(getattr(model, "merge_and_unload", None)) and merge_lora:
        model = copy.deepcopy(model).merge_and_unload()
    if not callable(getattr(model, "save_pretrained", None)):
        raise TypeError(f"{type(model).__name__} has no save_pretrained: not a Hugging Face model")
    with _new_final(run_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return _written(Path(run_dir) / "final")


def export_module(module: nn.Module, builder: str, args: dict[str, Any], run_dir: str | Path, *,
                  tokenizer: Any = None) -> list[Path]:
    """Write ``module`` as ``run_dir/final/model.safetensors`` + ``config.json`` ({builder, args}),
    and ``tokenizer`` (if given) with its ``save_pretrained``."""
    if builder not in _BUILDERS:
        raise ValueError(f"unknown exportable module {builder!r}; registered: {', '.join(sorted(_BUILDERS))}")
    with _new_final(run_dir) as tmp:
        save_model(module, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps({"divmin_module": builder, "args": args}, indent=2))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return _written(Path(run_dir) / "final")


def load_exported(path: str | Path) -> nn.Module:
    """The model exported to ``path`` (``RUN_DIR/final``): a registered module rebuilt from its
    ``config.json``, else ``AutoModelForCausalLM.from_pretrained(path)``; in eval mode.

    A missing directory, an unreadable or malformed ``config.json`` or weights that do not fit
    raise ``ValueError`` naming the file (never a Hub lookup: ``path`` is a local directory).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a path to an exported model directory, got {type(path).__name__}")
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"`path` {path}: no such directory (an export is RUN_DIR/final)")
    config = path / "config.json"
    spec = _read_spec(config) if config.is_file() else {}
    if "divmin_module" in spec:
        return _load_module(spec, config, path / "model.safetensors")
    if (path / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(path).eval()
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path).eval()
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"`path` {path}: not an exported model ({first})") from None


def _read_spec(config: Path) -> dict[str, Any]:
    try:
        spec = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{config}: not valid JSON ({type(err).__name__}: {err})") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{config}: must hold a JSON object, got {type(spec).__name__}")
    return spec


def _load_module(spec: dict[str, Any], config: Path, weights: Path) -> nn.Module:
    """The registered module ``spec`` names, built from its ``args`` and loaded from ``weights``."""
    name, args = spec["divmin_module"], spec.get("args")
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ValueError(f"{config}: unknown module {name!r}; registered: {', '.join(sorted(_BUILDERS))}")
    if not isinstance(args, dict):
        raise ValueError(f"{config}: 'args' must be a JSON object of the builder's arguments, got {args!r}")
    try:
        module = _BUILDERS[name](**args)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{config}: 'args' do not build module {name!r}: {err}") from None
    if not weights.is_file():
        raise ValueError(f"{weights}: missing (the exported weights)")
    try:
        load_model(module, str(weights))
    except Exception as err:  # a truncated file, another model's weights: name the file, not the parser
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{weights}: does not hold the weights of module {name!r} ({first})") from None
    return module.eval()
