"""divmin.engine: the one training loop shared by every method.

A method implements the `Task` protocol (models, optimizers, a step, and
optionally data, evaluation and extra state); `Trainer` runs it on Hugging
Face Accelerate with mixed precision, gradient accumulation, clipping, LR
schedules, DDP under ``accelerate launch``/``torchrun``, logging (console,
``metrics.jsonl``, TensorBoard, tqdm) and pickle-free checkpoints with exact
resume. See `Task` for the protocol and `_checkpoint` for the file layout.
"""

from ._checkpoint import latest_checkpoint
from ._config import EngineConfig
from ._context import StepContext
from ._schedules import available_schedules, lr_multiplier, register_schedule
from ._serialize import load_tree, save_tree
from ._task import StepOutput, Task, TrainResult
from ._trainer import Trainer

__all__ = [
    "EngineConfig",
    "StepContext",
    "StepOutput",
    "Task",
    "TrainResult",
    "Trainer",
    "available_schedules",
    "latest_checkpoint",
    "load_tree",
    "lr_multiplier",
    "register_schedule",
    "save_tree",
]
