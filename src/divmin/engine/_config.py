"""`EngineConfig`: every knob of the shared training loop, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._nonfinite import NONFINITE_POLICIES
from ._schedules import available_schedules
from ._validate import Bool, Instance, Int, Number, OneOf, validate

_MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class EngineConfig:
    """Configuration of :class:`~divmin.engine.Trainer`.

    A "step" is one engine step: ``grad_accum_steps`` calls of the task's
    ``train_step`` (one micro-batch each) followed by the optimizer update(s).
    All ``*_every`` counters and ``max_steps`` count engine steps.

    Every field is checked on construction (`divmin.engine.validate`); a bad
    value raises ``ValueError`` (a wrong type: `ConfigTypeError`, also a
    ``ValueError``) whose message starts with the field name in backticks.
    """

    # Number of engine steps (optimizer updates) to run. Default 1000.
    max_steps: int = 1000
    # Seed for python/numpy/torch RNGs, data order and the per-step generators.
    # Default 0.
    seed: int = 0
    # Autocast precision for model forwards: "no" (fp32), "fp16" (with a grad
    # scaler) or "bf16". Default "no".
    mixed_precision: str = "no"
    # Micro-batches accumulated per engine step; losses are divided by it so the
    # update equals one step on a batch this many times larger. Default 1.
    grad_accum_steps: int = 1
    # Clip the global grad norm of each update to this value; None = no clipping
    # (the grad norm is then not computed, saving one pass). Default 1.0.
    max_grad_norm: float | None = 1.0
    # Learning-rate schedule, a name from `available_schedules()`
    # ("constant", "linear", "cosine", ...), applied as a multiplier of every
    # param group's initial lr, as a function of the engine step. Default "constant".
    lr_schedule: str = "constant"
    # Linear warmup length in engine steps (multiplier (t+1)/warmup_steps). Default 0.
    warmup_steps: int = 0
    # Log (console, metrics.jsonl, TensorBoard, progress bar) every this many
    # steps, and always at the last step. Default 10.
    log_every: int = 10
    # Call `task.evaluate(ctx)` every this many steps; None = never. Default None.
    eval_every: int | None = None
    # Save a checkpoint every this many steps (and at the end); None = never.
    # Needs `out_dir` (recipes set it to their --out). Default None.
    checkpoint_every: int | None = None
    # How many most recent checkpoints to keep on disk; None = all. Default 3.
    keep_checkpoints: int | None = 3
    # Run directory for metrics.jsonl, tensorboard/ and checkpoints/; None =
    # write no files at all. Default None.
    out_dir: str | Path | None = None
    # Show a tqdm progress bar (main process only). Default True.
    progress: bool = True
    # What the run trains, shown on its progress bar and console log lines
    # (e.g. "forward_kl, seed 0, sigma_max 1"); None = "train". Default None.
    label: str | None = None
    # Write TensorBoard event files to out_dir/tensorboard (ignored when
    # out_dir is None). Default True.
    tensorboard: bool = True
    # Force CPU even when an accelerator is available. Default False.
    cpu: bool = False
    # What a NaN/inf loss or gradient norm does: "raise" stops the run with an
    # error naming the step and the last good checkpoint (the update is not
    # applied); "skip" drops the update with a warning and counts it (as AMP's
    # grad scaler does). Default "raise".
    on_nonfinite: str = "raise"

    CHECKS = dict(  # one per field: divmin.engine.validate
        max_steps=Int(ge=1), seed=Int(ge=0), mixed_precision=OneOf(_MIXED_PRECISION), grad_accum_steps=Int(ge=1),
        max_grad_norm=Number(gt=0, optional=True), lr_schedule=OneOf(available_schedules), warmup_steps=Int(ge=0),
        log_every=Int(ge=1), eval_every=Int(ge=1, optional=True), checkpoint_every=Int(ge=1, optional=True),
        keep_checkpoints=Int(ge=1, optional=True), out_dir=Instance((str, Path), optional=True),
        progress=Bool(), label=Instance(str, optional=True), tensorboard=Bool(), cpu=Bool(),
        on_nonfinite=OneOf(NONFINITE_POLICIES),
    )

    def __post_init__(self) -> None:
        # (`checkpoint_every` without `out_dir` is refused by the Trainer, not here: a recipe fills
        # `out_dir` in from its --out after the user's --set engine.checkpoint_every=...)
        validate(self)

    @property
    def run_dir(self) -> Path | None:
        """`out_dir` as a Path (None when no files are written)."""
        return None if self.out_dir is None else Path(self.out_dir)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields (paths as strings)."""
        d = asdict(self)
        d["out_dir"] = None if self.out_dir is None else str(self.out_dir)
        return d

