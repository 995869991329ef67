"""``divmin train METHOD``: train a method on your own models and data, then export the result.

- Configs (:func:`load_config`, :func:`print_config`): a YAML file (``yaml.safe_load``) and
  ``--set key=value`` overrides, checked by the trainer's own config class.
- Models (:func:`load_causal_lm`, :func:`apply_lora`): Hugging Face names or local paths, LoRA
  via peft; with none named, tiny offline defaults.
- Data (:func:`load_rows`): JSONL, CSV or a ``datasets`` directory in TRL's formats.
- Export (:func:`export_run`, :func:`load_exported`): ``RUN_DIR/final`` in Hugging Face format
  (or safetensors + JSON config for other modules).

Methods are registered with :func:`train_method`; :func:`available_methods` lists them.
See docs/training.md.
"""

from ._config import LoraSettings, load_config
from ._data import load_rows
from ..engine import export_hf, export_module, exportable_module, load_exported
from ._methods import FDPOTrainConfig, KDTrainConfig, LMSource  # importing the methods registers them
from ._methods_gen import FDistillTrainConfig, FDPGTrainConfig
from ._methods_mdlm import MDLMTrainConfig, pack_texts
from ._models import ModelLoadError, apply_lora, load_causal_lm, load_tokenizer, tiny_lm, tiny_tokenizer
from ._registry import CausalLMMethod, Models, TrainMethod, available_methods, get_method, train_method
from ._run import TrainRun, config_from, export_run, print_config, read_run_config, train

# the API page (members_order: __all__) lists the entry points first, internals last
__all__ = [
    "train",
    "export_run",
    "load_exported",
    "available_methods",
    "get_method",
    "KDTrainConfig",
    "FDPOTrainConfig",
    "FDPGTrainConfig",
    "FDistillTrainConfig",
    "MDLMTrainConfig",
    "load_config",
    "print_config",
    "CausalLMMethod",
    "LMSource",
    "LoraSettings",
    "ModelLoadError",
    "Models",
    "TrainMethod",
    "TrainRun",
    "apply_lora",
    "config_from",
    "export_hf",
    "export_module",
    "exportable_module",
    "load_causal_lm",
    "load_rows",
    "load_tokenizer",
    "pack_texts",
    "read_run_config",
    "tiny_lm",
    "tiny_tokenizer",
    "train_method",
]
