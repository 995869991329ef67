"""Export of a trained model to ``RUN_DIR/final/``, and :func:`load_exported` to get it back.

- Hugging Face models: ``save_pretrained`` (safetensors) plus the tokenizer, so that
  ``AutoModelForCausalLM.from_pretrained("RUN_DIR/final")`` loads it. A LoRA model is written
  merged into its base (``merge_lora: true``), or as the adapter alone (``adapter_config.json``,
  ``adapter_model.safetensors``; load it with ``peft.AutoPeftModelForCausalLM``).
- Other modules (f-distill generators...): ``model.safetensors`` and a ``config.json`` naming a
  registered builder and its arguments (``{"divmin_module": "mlp_generator", "args": {...}}``), from
  which :func:`load_exported` rebuilds the module.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

from safetensors.torch import load_model, save_model
from torch import nn
from ._models import quiet_transformers

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


def export_hf(model: nn.Module, tokenizer: Any, run_dir: str | Path, *, merge_lora: bool = False) -> list[Path]:
    """Write ``model`` (and ``tokenizer``) to ``run_dir/final`` with ``save_pretrained``; the files written.

    ``merge_lora``: a peft model is merged into its base first (on a copy: ``model`` is left as is).
    """
    final = Path(run_dir) / "final"
    final.mkdir(parents=True, exist_ok=True)
    if callable(getattr(model, "merge_and_unload", None)) and merge_lora:
        model = copy.deepcopy(model).merge_and_unload()
    if not callable(getattr(model, "save_pretrained", None)):
        raise TypeError(f"{type(model).__name__} has no save_pretrained: not a Hugging Face model")
    with quiet_transformers():
        model.save_pretrained(final, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(final)
    return _written(final)


def export_module(module: nn.Module, builder: str, args: dict[str, Any], run_dir: str | Path) -> list[Path]:
    """Write ``module`` as ``run_dir/final/model.safetensors`` + ``config.json`` ({builder, args})."""
    if builder not in _BUILDERS:
        raise ValueError(f"unknown exportable module {builder!r}; registered: {', '.join(sorted(_BUILDERS))}")
    final = Path(run_dir) / "final"
    final.mkdir(parents=True, exist_ok=True)
    save_model(module, str(final / "model.safetensors"))
    (final / "config.json").write_text(json.dumps({"divmin_module": builder, "args": args}, indent=2))
    return _written(final)


def load_exported(path: str | Path) -> nn.Module:
    """The model exported to ``path`` (``RUN_DIR/final``): a registered module rebuilt from its
    ``config.json``, else ``AutoModelForCausalLM.from_pretrained(path)``; in eval mode."""
    path = Path(path)
    config = path / "config.json"
    spec = json.loads(config.read_text()) if config.is_file() else {}
    if "divmin_module" in spec:
        name = spec["divmin_module"]
        if name not in _BUILDERS:
            raise ValueError(f"{config}: unknown module {name!r}; registered: {', '.join(sorted(_BUILDERS))}")
        module = _BUILDERS[name](**spec["args"])
        load_model(module, str(path / "model.safetensors"))
        return module.eval()
    if (path / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        with quiet_transformers():
            return AutoPeftModelForCausalLM.from_pretrained(path).eval()
    from transformers import AutoModelForCausalLM

    with quiet_transformers():
        return AutoModelForCausalLM.from_pretrained(path).eval()
