"""`Trainer`: the one training loop every divmin method runs on."""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed
from torch import nn

from ._checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, load_rng, save_checkpoint
from ._config import EngineConfig
from ._context import _SHARDED, StepContext
from ._data import BatchStream
from ._lock import run_lock
from ._logging import RunLogger
from ._nonfinite import NonFiniteError, check_finite_weights
from ._schedules import lr_multiplier
from ._task import Task, TrainResult, as_step_output, static_model_names

# Names become file names in checkpoints; optimizer names also log keys (lr/<name>, grad_norm/<name>).
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_OPTIMIZER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class _Run:
    """Everything one ``fit`` call builds."""

    accelerator: Accelerator
    ctx: StepContext
    stream: BatchStream | None
    trainable: list[str]
    saved: list[str]  # models written to checkpoints (all but static ones)


class Trainer:
    """Runs a `Task` under a `EngineConfig`.

    Example::

        result = Trainer(MyTask(), EngineConfig(max_steps=500, out_dir="runs/x",
                                                checkpoint_every=100)).fit(resume=True)

    After ``fit``, ``trainer.models`` holds the bare (unwrapped) trained models
    and ``trainer.accelerator`` the Accelerator used.
    """

    def __init__(self, task: Task, config: EngineConfig | None = None) -> None:
        missing = [m for m in ("models", "optimizers", "train_step") if not callable(getattr(task, m, None))]
        if missing:
            raise TypeError(f"task {type(task).__name__} lacks required method(s) {missing}")
        self.task = task
        self.config = config if config is not None else EngineConfig()
        if self.config.checkpoint_every is not None and self.config.out_dir is None:
            raise ValueError("`checkpoint_every` needs `out_dir`: checkpoints are written under out_dir/checkpoints")
        self.accelerator: Accelerator | None = None
        self.models: dict[str, nn.Module] = {}

    # ------------------------------------------------------------------ API
    def fit(self, resume: bool | str | Path = False) -> TrainResult:
        """Train for ``config.max_steps`` engine steps.

        resume: False starts fresh (refusing an ``out_dir`` that already holds
            checkpoints); True continues from the latest checkpoint in
            ``out_dir`` if there is one (else starts fresh), replaying exactly
            what the uninterrupted run would have done; a path resumes from
            that checkpoint directory.
        """
        run = self._setup()
        # One run per directory: the main process locks out_dir (see `run_lock`).
        locked = self.config.run_dir is not None and run.accelerator.is_main_process
        with run_lock(self.config.run_dir) if locked else contextlib.nullcontext():
            start = self._restore(run, resume)
            logger = RunLogger(self.config, run.accelerator.is_main_process, start, resumed=start > 0)
            try:
                history, step = self._loop(run, start, logger)
            finally:
                logger.close()
        self.models = {n: run.accelerator.unwrap_model(m) for n, m in run.ctx.models.items()}
        # a resumed run that had already finished logs nothing new: report its last record
        record = history[-1] if history else run.ctx._last_record
        last = {k: v for k, v in (record or {}).items() if k != "step"}
        return TrainResult(
            metrics=last,
            history=history,
            out_dir=self.config.run_dir,
            step=step,
            optimizer_steps=dict(run.ctx.optimizer_steps),
            stopped_early=run.ctx._stop,
            skipped_updates=dict(run.ctx.skipped_updates),
        )

    # ---------------------------------------------------------------- setup
    def _setup(self) -> _Run:
        cfg = self.config
        _reset_accelerator_state_if_needed(cfg)
        acc = Accelerator(
            # Without CUDA, Accelerate only forms a multi-process CPU group when asked for
            # CPU; otherwise every torchrun process would train alone, unnoticed.
            cpu=cfg.cpu or (not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1),
            mixed_precision=cfg.mixed_precision,
            # Schedules are applied by the engine from the step index; Accelerate's
            # scheduler wrapper would step them once per process.
            step_scheduler_with_optimizer=False,
            # Shuffling re-seeded from (seed, epoch): same order on every process
            # and after a resume.
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
            kwargs_handlers=[DistributedDataParallelKwargs(
                find_unused_parameters=bool(getattr(self.task, "find_unused_parameters", False)))],
        )
        self.accelerator = acc
        set_seed(cfg.seed)  # same initialisation on every process
        raw = _check_named(self.task.models(), nn.Module, "models()", _model_name_error)
        for model in raw.values():
            model.to(acc.device)
        opts = _check_named(self.task.optimizers(raw), torch.optim.Optimizer, "optimizers(models)",
                            _optimizer_name_error)
        if not opts:
            raise ValueError("optimizers(models) returned no optimizer")
        for opt in opts.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
        models, optimizers, trainable = _prepare(acc, raw, opts)
        # Different dropout masks / noise per process from here on.
        set_seed(cfg.seed, device_specific=True)
        ctx = StepContext(acc, cfg, models, optimizers)
        batches = getattr(self.task, "batches", None)
        source = batches(ctx) if callable(batches) else None
        stream = BatchStream(source, acc) if source is not None else None
        static = static_model_names(self.task)
        unknown = static - set(raw)
        if unknown:
            raise ValueError(f"static_models names unknown models {sorted(unknown)}")
        return _Run(acc, ctx, stream, trainable, [n for n in raw if n not in static])

    def _restore(self, run: _Run, resume: bool | str | Path) -> int:
        """Load a checkpoint if asked; return the engine step to start from."""
        root = None if self.config.run_dir is None else self.config.run_dir / "checkpoints"
        if resume is False:
            if root is not None and list_checkpoints(root):
                raise FileExistsError(f"{root} already holds checkpoints: resume them (fit(resume=True); on the "
                                      "command line --resume) or choose another output directory")
            return 0
        if resume is True:
            if self.config.run_dir is None:
                raise ValueError("fit(resume=True) needs EngineConfig.out_dir")
            path = latest_checkpoint(self.config.run_dir)
            if path is None:
                warnings.warn(f"resume: no checkpoint in {root}; starting from step 0", RuntimeWarning, stacklevel=3)
                return 0
        else:
            path = Path(resume)
        acc, ctx = run.accelerator, run.ctx
        unwrapped = {n: acc.unwrap_model(ctx.models[n]) for n in run.saved}
        state, task_state = load_checkpoint(path, acc, models=unwrapped, optimizers=ctx.optimizers)
        if task_state is not None:
            self.task.load_state_dict(task_state)  # type: ignore[attr-defined]
        ctx.optimizer_steps.update(state["optimizer_steps"])
        ctx.skipped_updates.update(state.get("skipped_updates", {}))
        ctx._last_record = state.get("last_record")
        # metric sums since the last log, so a checkpoint between two log steps changes no logged mean
        ctx._metrics = {k: [float(v[0]), int(v[1])] for k, v in state.get("pending_metrics", {}).items()}
        ctx._last_checkpoint = path
        if run.stream is not None and state["data"] is not None:
            run.stream.load_state(state["data"])
        load_rng(path, acc)  # last: nothing may draw random numbers after it
        return int(state["step"])

    # ----------------------------------------------------------------- loop
    def _loop(self, run: _Run, start: int, logger: RunLogger) -> tuple[list[dict[str, float]], int]:
        cfg, ctx = self.config, run.ctx
        history: list[dict[str, float]] = []
        step = start
        while step < cfg.max_steps:
            self._train_step(run, step)
            step += 1
            if step == start + 1:
                _check_replicas(run, step)  # fail fast on a task that trains outside the DDP wrapper
            logger.advance()
            last = step == cfg.max_steps or ctx._stop
            record: dict[str, float] = {}
            if step % cfg.log_every == 0 or last:
                # metrics are means over every micro-batch since the last log (as HF's logging_steps);
                # the learning rates are the current ones
                single = len(ctx.optimizers) == 1
                lrs = {"lr" if single else f"lr/{n}": o.param_groups[0]["lr"] for n, o in ctx.optimizers.items()}
                record.update(self._reduce(run, {**ctx._pop_metrics(), **lrs}))
            if cfg.eval_every is not None and step % cfg.eval_every == 0:
                record.update(self._evaluate(run, step))
            if record:
                record = {"step": step, **record}
                logger.log(record)
                history.append(record)
                ctx._last_record = record
            if cfg.checkpoint_every is not None and (step % cfg.checkpoint_every == 0 or last):
                self._save(run, step)
            if ctx._stop:
                break
        if step > start + 1:
            _check_replicas(run, step)
        return history, step

    def _train_step(self, run: _Run, step: int) -> None:
        """One engine step: ``grad_accum_steps`` micro-batches, then the update(s)."""
        cfg, ctx = self.config, run.ctx
        ctx._begin_step(step)
        mult = lr_multiplier(cfg.lr_schedule, step, cfg.warmup_steps, cfg.max_steps)
        for opt in ctx.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * mult
        for micro in range(cfg.grad_accum_steps):
            ctx._begin_micro(micro)
            batch = run.stream.next() if run.stream is not None else None
            with self._sync_context(run):
                out = as_step_output(self._call_step(run, batch, step))
                metrics = dict(out.metrics)
                if out.loss is not None:
                    metrics.setdefault("loss", out.loss.detach())
                # logged before the update, so that a non-finite error can name the loss terms
                ctx.log(metrics)
                if out.loss is not None:
                    if ctx._updated_in_micro:
                        raise RuntimeError("train_step called ctx.update(...) and returned a loss; return loss=None")
                    ctx.update(list(ctx.optimizers), out.loss)

    def _call_step(self, run: _Run, batch: Any, step: int) -> Any:
        """``task.train_step``; a loss refusing NaN/inf inputs mid-run is reported as the run diverging."""
        from ..divergences.kernels import NonFiniteInputError

        try:
            return self.task.train_step(batch, run.ctx)
        except NonFiniteInputError as err:
            where = run.ctx._last_checkpoint or "none (no checkpoint written yet)"
            raise NonFiniteError(f"step {step}: the model's outputs became non-finite ({err}); "
                                 f"{_nonfinite_weight(run)}. Last good checkpoint: {where}. Lower the "
                                 "learning rate or find the NaN source.") from err

    def _sync_context(self, run: _Run) -> contextlib.AbstractContextManager:
        """Skip DDP's gradient all-reduce on all but the last micro-batch."""
        if run.ctx.num_processes == 1 or run.ctx.sync_gradients:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for name in run.trainable:
            stack.enter_context(run.accelerator.no_sync(run.ctx.models[name]))
        return stack

    def _reduce(self, run: _Run, metrics: dict[str, Any]) -> dict[str, float]:
        """Average scalar metrics over processes (one collective for all keys)."""
        keys = sorted(metrics)
        if not keys:
            return {}
        device = run.accelerator.device
        # float64: python floats (lr) must not be rounded to float32 on the way to the log.
        values = torch.stack([torch.as_tensor(metrics[k], dtype=torch.float64, device=device).mean() for k in keys])
        if run.accelerator.num_processes > 1:
            values = run.accelerator.reduce(values, reduction="mean")
        return dict(zip(keys, values.tolist()))

    def _evaluate(self, run: _Run, step: int) -> dict[str, float]:
        evaluate = getattr(self.task, "evaluate", None)
        if not callable(evaluate):
            return {}
        ctx = run.ctx
        ctx.step = step
        for name in run.trainable:
            ctx.models[name].eval()
        try:
            out = evaluate(ctx) or {}
        finally:
            for name in run.trainable:
                ctx.models[name].train()
        return {f"eval/{k}": v for k, v in self._reduce(run, dict(out)).items()}

    def _save(self, run: _Run, step: int) -> None:
        acc, ctx, cfg = run.accelerator, run.ctx, self.config
        state_dict = getattr(self.task, "state_dict", None)
        models = {n: acc.unwrap_model(ctx.models[n]) for n in run.saved}
        check_finite_weights(models, step)  # replicas are identical: every process decides alike
        ctx._last_checkpoint = save_checkpoint(
            cfg.run_dir / "checkpoints",
            step,
            acc,
            models=models,
            optimizers=ctx.optimizers,
            engine_state={
                "step": step,
                "data": run.stream.state() if run.stream is not None else None,
                "optimizer_steps": dict(ctx.optimizer_steps),
                "skipped_updates": dict(ctx.skipped_updates),
                "last_record": ctx._last_record,
                "pending_metrics": {k: [float(v[0]), int(v[1])] for k, v in ctx._metrics.items()},
                "config": cfg.to_dict(),
            },
            task_state=state_dict() if callable(state_dict) else None,
            keep=cfg.keep_checkpoints,
        )


# ---------------------------------------------------------------- helpers
def _nonfinite_weight(run: _Run) -> str:
    """Where a run's outputs turned non-finite from: the first NaN/inf parameter, or finite weights."""
    for name in run.saved:
        for pname, p in run.accelerator.unwrap_model(run.ctx.models[name]).named_parameters():
            if not bool(torch.isfinite(p.detach()).all()):
                return f"parameter {pname!r} of model {name!r} holds NaN/inf"
    return "the weights are finite (huge values, or a non-finite input)"


def _check_named(value: Any, kind: type, where: str, name_error: Callable[[Any, Any], str | None]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{where} must return a dict name -> {kind.__name__}, got {type(value).__name__}")
    for name, obj in value.items():
        problem = name_error(name, obj)
        if problem:
            raise ValueError(f"{where}: name {name!r} {problem}")
        if not isinstance(obj, kind):
            raise TypeError(f"{where}[{name!r}] must be a {kind.__name__}, got {type(obj).__name__}")
    return value


def _model_name_error(name: Any, model: Any) -> str | None:
    return None if isinstance(name, str) and _NAME.match(name) else f"must match {_NAME.pattern}"


def _optimizer_name_error(name: Any, opt: Any) -> str | None:
    """The naming rule of `Task.optimizers`: an identifier naming the model/role it updates, not the algorithm."""
    optim = torch.optim
    algorithms = {n.lower() for n, c in vars(optim).items() if isinstance(c, type) and issubclass(c, optim.Optimizer)}
    algorithms.add(type(opt).__name__.lower())  # a custom optimizer class too
    if isinstance(name, str) and _OPTIMIZER_NAME.match(name) and name.lower() not in algorithms:
        return None
    return (f"is not allowed; name an optimizer after the model or role it updates (an identifier such as "
            f"'policy', 'student', 'critic'), not after its algorithm ({type(opt).__name__})")


def _check_replicas(run: _Run, step: int) -> None:
    """Raise unless every process holds the same weights of each DDP-wrapped model.

    DDP averages only gradients computed inside the wrapper's forward; a task
    that trains through ``ctx.unwrap(name)``, a method or a parameter of
    ``ctx.models[name]`` gets per-process gradients and replicas that drift
    apart silently. One all-gather of two float64 sums per parameter tensor.
    """
    acc = run.accelerator
    if acc.num_processes == 1 or acc.distributed_type in _SHARDED or not run.trainable:
        return
    owners, stats = [], []
    for name in run.trainable:
        for p in acc.unwrap_model(run.ctx.models[name]).parameters():
            x = p.detach().double()
            owners.append(name)
            stats.append(torch.stack([x.sum(), x.abs().sum()]))
    every = acc.gather(torch.stack(stats)[None])  # (processes, tensors, 2)
    gap = (every[..., 0] - every[0, :, 0]).abs().amax(0)
    bad = sorted({owners[i] for i in (gap > 1e-6 * every[0, :, 1]).nonzero().flatten().tolist()})
    if bad:
        raise RuntimeError(
            f"after step {step} the DDP replicas of model(s) {bad} differ across processes: their gradients were "
            "computed outside the wrapper's forward and never averaged. Run them as ctx.models[name](...) or "
            "ctx.call(name, fn, ...) (methods, submodules, parameters); keep ctx.unwrap(name) for work without "
            "gradients.")


def _prepare(
    acc: Accelerator, raw: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer]
) -> tuple[dict[str, nn.Module], dict[str, torch.optim.Optimizer], list[str]]:
    """Wrap trainable models + optimizers for the backend; place and autocast frozen ones."""
    trainable = [n for n, m in raw.items() if any(p.requires_grad for p in m.parameters())]
    for model in raw.values():
        # Accelerate skips a module marked as prepared, and the mark survives its Accelerator and copy.deepcopy:
        # a policy copied from an earlier run's frozen base would get no DDP wrapper and train apart per process
        vars(model).pop("_is_accelerate_prepared", None)
    objs = [raw[n] for n in trainable] + list(opts.values())
    prepared = acc.prepare(*objs)
    if len(objs) == 1:
        prepared = (prepared,)
    models = dict(zip(trainable, prepared[: len(trainable)]))
    for name, model in raw.items():
        if name not in models:
            # evaluation_mode: device placement + autocast forward, no DDP wrapper
            # (DDP refuses modules without trainable parameters).
            models[name] = acc.prepare_model(model, evaluation_mode=True)
            models[name].eval()
        else:
            models[name].train()
    models = {n: models[n] for n in raw}  # keep the task's order
    optimizers = dict(zip(opts, prepared[len(trainable) :]))
    return models, optimizers, trainable


def _reset_accelerator_state_if_needed(cfg: EngineConfig) -> None:
    """Allow successive ``fit`` calls with other precision / device in one process.

    Accelerate keeps a process-wide singleton that refuses to change mixed
    precision and silently keeps the first device. Resetting it is what
    Accelerate's own test-suite does between configurations; the device part
    (PartialState) is only reset in a single, non-distributed process, where it
    holds no process group.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    partial = PartialState._shared_state
    device = partial.get("device")
    if device is not None and partial.get("distributed_type") == DistributedType.NO:
        on_cpu = device.type == "cpu"
        if (cfg.cpu and not on_cpu) or (not cfg.cpu and on_cpu and torch.cuda.is_available()):
            AcceleratorState._reset_state(reset_partial_state=True)
            return
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != cfg.mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
