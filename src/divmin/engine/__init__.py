"""divmin.engine: the one training loop shared by every method.

A method implements the `Task` protocol (models, optimizers, a step, and
optionally data, evaluation and extra state); `Trainer` runs it on Hugging
Face Accelerate with mixed precision, gradient accumulation, clipping, LR
schedules, DDP under ``accelerate launch``/``torchrun``, logging (console,
``metrics.jsonl``, TensorBoard, tqdm), pickle-free checksummed checkpoints with
exact resume, a guard against NaN/inf updates (`NonFiniteError`) and one run
per output directory (`run_lock`); nothing written under an output directory follows a
symbolic link (`_safe_io`: `atomic_write`, `atomic_path`, `open_nofollow`, `safe_dir`). See
`Task` for the protocol and `_checkpoint` for the file layout.

Also here, for every method: `validate` and its field checks (`Number`, `Int`,
`Bool`, `OneOf`, `Tuple`, `Instance`, `IsDivergence`), which every config
dataclass runs on construction, and `MethodTrainer`, the base of the thin
method trainers (``fit(resume) -> TrainResult``, ``engine``); `ema_update` / `ema_copy`, the one EMA
of model weights; `deprecated_aliases`, former public names kept one release.
"""

from ._checkpoint import NoIntactCheckpointError, default_checkpoint_every, latest_checkpoint, verify_checkpoint
from ._lock import RunLockedError, run_lock
from ._nonfinite import NONFINITE_POLICIES, NonFiniteError
from ._config import EngineConfig
from ._context import StepContext
from ._describe import describe_config, field_docs
from ._deprecate import deprecated_aliases
from ._ema import ema_copy, ema_update
from ._method import MethodTrainer, trainable_adamw
from ._describe import PLUMBING_KEYS, example_config, shown_doc
from .runs import (RESUME_SAFE, RunDir, apply_values, config_items, config_keys, flatten, is_main_process, jsonable,
                   load_config, parse_overrides, parse_value, read_yaml, resume_changes, tree_items)
from ._export import export_hf, export_module, exportable_module, load_exported, quiet_transformers
from ._runnable import METHODS, Models, TrainMethod, available_methods, discover_methods, get_method, train_method
from ._safe_io import UnsafePathError, atomic_path, atomic_write, check_not_link, open_nofollow, safe_dir
from ._schedules import available_schedules, lr_multiplier, register_schedule
from ._serialize import load_tree, save_tree
from ._task import StepOutput, Task, TrainResult
from ._supervised import CrossEntropyTask
from ._trainer import Trainer
from ._validate import (
    Bool,
    Check,
    ConfigTypeError,
    Instance,
    Int,
    IsDivergence,
    Number,
    OneOf,
    Text,
    Tuple,
    checks_of,
    is_default,
    validate,
)

# the API page (members_order: __all__) lists the entry points first, internals last
__all__ = [
    "Trainer",
    "EngineConfig",
    "Task",
    "StepContext",
    "StepOutput",
    "TrainResult",
    "CrossEntropyTask",
    "MethodTrainer",
    "latest_checkpoint",
    "verify_checkpoint",
    "describe_config",
    "validate",
    "Bool",
    "Check",
    "ConfigTypeError",
    "Instance",
    "Int",
    "NONFINITE_POLICIES",
    "NonFiniteError",
    "NoIntactCheckpointError",
    "RunLockedError",
    "IsDivergence",
    "Number",
    "OneOf",
    "Text",
    "Tuple",
    "UnsafePathError",
    "atomic_path",
    "atomic_write",
    "check_not_link",
    "available_schedules",
    "checks_of",
    "default_checkpoint_every",
    "field_docs",
    "is_default",
    "load_tree",
    "lr_multiplier",
    "open_nofollow",
    "register_schedule",
    "run_lock",
    "safe_dir",
    "save_tree",
    "trainable_adamw",
    "ema_copy",
    "ema_update",
    "deprecated_aliases",
    "RESUME_SAFE",
    "apply_values",
    "config_items",
    "config_keys",
    "jsonable",
    "parse_overrides",
    "parse_value",
    "resume_changes",
    "tree_items",
    "PLUMBING_KEYS",
    "shown_doc",
    "example_config",
    "RunDir",
    "flatten",
    "is_main_process",
    "load_config",
    "read_yaml",
    "METHODS",
    "Models",
    "TrainMethod",
    "available_methods",
    "discover_methods",
    "get_method",
    "train_method",
    "export_hf",
    "export_module",
    "exportable_module",
    "load_exported",
    "quiet_transformers",
]
