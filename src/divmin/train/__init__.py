"""``divmin train METHOD``: train a method on your own models and data, then export the result.

Each method registers itself in its own package (``divmin/<package>/_method.py``, with
:func:`divmin.engine.train_method`); its config is where the models and data come from plus the
method's own config nested under its name (``kd.divergence``, ``kd.engine.max_steps``). This
package is the command's thin layer:

- :func:`train`, :func:`config_from`, :func:`print_config`: run a method into a run directory
  (:class:`divmin.engine.RunDir`, as ``divmin run``), its config from a YAML file and ``--set``
  overrides (:func:`divmin.engine.load_config`), the commented example config;
- :func:`export_run`, :func:`read_run_config`: re-export a run from its checkpoint to ``RUN_DIR/final``;
- :func:`prepare` then :func:`run_prepared` are :func:`train` in two steps: everything a user can get
  wrong fails in the first, before any file is written (the command line reports it in one line).

The names below from :mod:`divmin.lm`, :mod:`divmin.data` and :mod:`divmin.engine` (models,
tokenizers, LoRA, data rows, export) are re-exported here, where they lived before.
See docs/training.md.
"""

from ..align import FDPGTrainConfig, FDPOTrainConfig
from ..data import load_rows, pack_texts
from ..diffusion import FDistillTrainConfig, MDLMTrainConfig
from ..distill import KDTrainConfig
from ..engine import Models, TrainMethod, available_methods, get_method, load_config, train_method
from ..engine import export_hf, export_module, exportable_module, load_exported
from ..lm import CausalLMMethod, LMSource, LoraSettings, ModelLoadError, apply_lora, load_causal_lm, load_tokenizer
from ..lm import tiny_lm, tiny_tokenizer
from ._run import Prepared, TrainRun, config_from, export_run, prepare, print_config, read_run_config, run_prepared, train

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
    "prepare",
    "run_prepared",
    "Prepared",
]
