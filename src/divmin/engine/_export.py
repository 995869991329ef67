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

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from ._safe_io import check_not_link

__all__ = ["exportable_module", "export_hf", "export_module", "load_exported", "quiet_transformers"]

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def exportable_module(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``builder(**args) -> nn.Module`` under ``name``, for :func:`export_module` / :func:`load_exported`."""
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"exportable module {name!r} is already registered")
        _BUILDERS[name] = fn
        return fn

    return deco


@contextlib.contextmanager
def quiet_transformers():
    """Without transformers' own bars ("Loading weights", "Writing model shards") for the block.

    They draw on every load and export, also off a terminal where they pile up into long lines;
    divmin's console says what was loaded and written instead. huggingface_hub's download
    bars stay as they were: a download can take minutes.
    """
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if was:
        import huggingface_hub.utils as hub_utils

        hub_bars = not hub_utils.are_progress_bars_disabled()
        hf_logging.disable_progress_bar()  # it turns the Hub's off too: turn those back on
        if hub_bars:
            hub_utils.enable_progress_bars()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


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
    with _new_final(run_dir) as tmp, quiet_transformers():
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

        with quiet_transformers():
            return AutoPeftModelForCausalLM.from_pretrained(path).eval()
    from transformers import AutoModelForCausalLM

    try:
        with quiet_transformers():
            return AutoModelForCausalLM.from_pretrained(path).eval()
    except (OSError, ValueError) as err:
        raise ValueError(f"`path` {path}: not an exported model ({_first_line(err)})") from None


def _read_spec(config: Path) -> dict[str, Any]:
    try:
        spec = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"`path`: {config} is not valid JSON ({type(err).__name__}: {err})") from None
    if not isinstance(spec, dict):
        raise ValueError(f"`path`: {config} must hold a JSON object, got {type(spec).__name__}")
    return spec


def _load_module(spec: dict[str, Any], config: Path, weights: Path) -> nn.Module:
    """The registered module ``spec`` names, built from its ``args`` and loaded from ``weights``.

    The module is first built on the meta device (no memory) and its tensor shapes compared with the
    weights file's header, so ``args`` asking for a huge module cost nothing before they are refused.
    """
    name, args = spec["divmin_module"], spec.get("args")
    if isinstance(name, str) and name not in _BUILDERS:
        from ._runnable import discover_methods

        discover_methods()  # a method package registers its builders on import: `load_exported` alone finds them
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ValueError(f"`path`: {config} names an unknown module {name!r}; registered: {', '.join(sorted(_BUILDERS))}")
    if not isinstance(args, dict):
        raise ValueError(f"`path`: {config}'s 'args' must be a JSON object of the builder's arguments, got {args!r}")
    if not weights.is_file():
        raise ValueError(f"`path`: {weights} is missing (the exported weights)")
    stored = _stored_shapes(weights, name)
    try:
        with torch.device("meta"):
            state = _BUILDERS[name](**args).state_dict(keep_vars=True)
    except Exception as err:  # a builder's own complaint about its arguments, whatever its type
        raise ValueError(f"`path`: {config}'s 'args' do not build module {name!r}: {_first_line(err)}") from None
    tied: dict[int, list[str]] = {}  # save_model stores one name of tied tensors
    for key, t in state.items():
        tied.setdefault(id(t), []).append(key)
    wrong = sorted(k for k in stored if k not in state or list(state[k].shape) != stored[k])
    wrong += sorted(names[0] for names in tied.values() if not any(n in stored for n in names))
    if wrong:
        raise ValueError(f"`path`: {weights} does not hold the weights of module {name!r} built from {config}'s "
                         f"'args' (tensors {', '.join(wrong[:3])}{'...' if len(wrong) > 3 else ''} differ)")
    module = _BUILDERS[name](**args)
    try:
        load_model(module, str(weights))
    except Exception as err:  # noqa: BLE001 - a damaged file: name it, not the parser
        raise ValueError(f"`path`: {weights} does not hold the weights of module {name!r} ({_first_line(err)})") from None
    return module.eval()


def _stored_shapes(weights: Path, name: str) -> dict[str, list[int]]:
    """{tensor name: shape} from the safetensors header of ``weights`` (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - safetensors' own error types
        raise ValueError(f"`path`: {weights} is not a readable safetensors file of module {name!r} "
                         f"({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
