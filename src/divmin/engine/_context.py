"""`StepContext`: what a task's step sees, and the one place where updates happen."""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.utils import DistributedType
from torch import nn

from ._nonfinite import MAX_CONSECUTIVE_SKIPS, NonFiniteError, describe_bad_update, grad_norm, is_finite
from ._seeds import SeedTable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ._config import EngineConfig

# These backends shard or own the gradients; only Accelerate knows how to clip them.
_SHARDED = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.XLA)


class StepContext:
    """Handle passed to ``train_step``, ``batches`` and ``evaluate``.

    Attributes:
        step: 0-based index of the engine step being computed (inside
            ``evaluate``: the number of completed steps).
        micro_step: index of the micro-batch within the step, in
            ``[0, grad_accum_steps)``.
        grad_accum_steps: micro-batches per engine step.
        max_steps: total engine steps of the run.
        accelerator: the ``accelerate.Accelerator``.
        models: prepared models by name (DDP-wrapped when trainable and
            distributed). Call ``models[name](...)`` for a forward; anything
            else that needs gradients (a method, a submodule, a parameter) goes
            through ``call(name, fn, ...)``; ``unwrap(name)`` gives the bare
            module for work without gradients (sampling, EMA, evaluation).
        optimizers: prepared optimizers by name.
        generator: ``torch.Generator`` on ``device``, re-seeded from
            (seed, process, step, micro_step) before every micro-batch: a
            function of the step, hence identical after a resume and
            different on each process.
        cpu_generator: same seed, on CPU (for index sampling on CPU).
        optimizer_steps: ``optimizer.step()`` calls so far, per name.
        skipped_updates: updates dropped as non-finite (``on_nonfinite="skip"``), per name.

    Methods: ``update(name, loss)`` (backward + accumulation + clip + step),
    ``log(**metrics)``, ``call(name, fn, ...)``, ``unwrap(name)``, ``frozen(*names)``, ``mean(value)``
    (cross-process average), ``request_stop()``.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        config: EngineConfig,
        models: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
    ) -> None:
        self.accelerator = accelerator
        self.config = config
        self.models = dict(models)
        self.optimizers = dict(optimizers)
        self.step = 0
        self.micro_step = 0
        self.grad_accum_steps = config.grad_accum_steps
        self.max_steps = config.max_steps
        self.generator = torch.Generator(device=accelerator.device)
        self.cpu_generator = torch.Generator() if accelerator.device.type != "cpu" else self.generator
        self.optimizer_steps = {name: 0 for name in self.optimizers}
        # Params per optimizer, for clipping and zeroing exactly what an update touches.
        self._params = {
            name: [p for g in opt.param_groups for p in g["params"]] for name, opt in self.optimizers.items()
        }
        self.skipped_updates = {name: 0 for name in self.optimizers}
        self._consecutive_skips = {name: 0 for name in self.optimizers}
        self._loss_bad: set[str] = set()  # optimizers whose accumulated loss this step was NaN/inf
        self._last_checkpoint = None  # set by the Trainer: named by a non-finite error
        self._last_record: dict | None = None  # the last logged record (checkpointed, for a finished run's result)
        self._metrics: dict[str, list] = {}
        self._updated_in_micro: set[str] = set()
        self._stop = False
        # constant for the run; Accelerate answers them through its shared state on every call
        self._process_index, self._num_processes = accelerator.process_index, accelerator.num_processes
        self._seeds = SeedTable(config.seed, self._process_index, config.grad_accum_steps)
        self._bare_optimizers = {name: _bare_optimizer(opt, accelerator) for name, opt in self.optimizers.items()}
        self._plain_backward = _plain_backward(accelerator)

    # ------------------------------------------------------------------ info
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def process_index(self) -> int:
        return self._process_index

    @property
    def num_processes(self) -> int:
        return self._num_processes

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def sync_gradients(self) -> bool:
        """True on the last micro-batch of the step, when updates really step."""
        return self.micro_step == self.grad_accum_steps - 1

    def unwrap(self, name: str) -> nn.Module:
        """The bare module behind ``models[name]`` (no DDP/compile wrapper).

        Cached per wrapper: Accelerate's unwrap looks installed packages up on every call, a
        sixth of a small model's step when a method unwraps a dozen times per step."""
        wrapped = self.models[name]
        cache: dict[str, tuple[nn.Module, nn.Module]] = vars(self).setdefault("_bare", {})  # name -> (wrapped, bare)
        hit = cache.get(name)
        if hit is None or hit[0] is not wrapped:
            hit = cache[name] = (wrapped, self.accelerator.unwrap_model(wrapped))
        return hit[1]

    def call(self, name: str, fn: str | Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``fn(module, *args, **kwargs)`` run as a forward of ``models[name]``.

        ``fn`` is a function of the bare module or the name of one of its
        methods. Under DDP a gradient reaches the other processes only from
        work done inside the wrapper's forward; this runs ``fn`` there (the
        module's ``forward`` is swapped for the call), so a method
        (``ctx.call("score", "dsm_loss", x, sigma, eps)``), a submodule of a
        ``ModuleDict`` (``ctx.call("fits", lambda m, x: m["a"](x), x)``) or a
        bare parameter (``ctx.call("policy", lambda m: m.logits)``) trains in
        sync. Autocast applies as for ``models[name](...)``. Without a wrapper
        it is the plain call.
        """
        wrapped, bare = self.models[name], self.unwrap(name)
        method = getattr(bare, fn) if isinstance(fn, str) else functools.partial(fn, bare)
        if wrapped is bare:
            with self.accelerator.autocast():
                return method(*args, **kwargs)
        inner = getattr(wrapped, "module", None)
        inner = inner if isinstance(inner, nn.Module) else bare  # what the wrapper's forward calls
        saved = inner.__dict__.get("forward")  # Accelerate's autocast forward, if any

        def restore() -> None:
            if saved is not None:
                inner.forward = saved
            elif "forward" in inner.__dict__:
                del inner.forward

        def once(*a: Any, **kw: Any) -> Any:
            restore()  # inside fn the module's own forward is the real one again
            return method(*a, **kw)

        inner.forward = once
        try:
            with self.accelerator.autocast():
                return wrapped(*args, **kwargs)
        finally:
            restore()

    # --------------------------------------------------------------- actions
    def log(self, metrics: Mapping[str, float | torch.Tensor] | None = None, **kw: float | torch.Tensor) -> None:
        """Record scalar metrics: each logged value is their mean since the last log (micro-batches, processes)."""
        for key, value in {**(metrics or {}), **kw}.items():
            if isinstance(value, torch.Tensor):
                # No .item(): keeps the step free of host syncs; reduced only when logged.
                value = value.detach().float().mean()
            else:
                value = float(value)
            slot = self._metrics.setdefault(key, [0.0, 0])
            slot[0] = slot[0] + value
            slot[1] += 1

    def update(self, name: str | Sequence[str], loss: torch.Tensor) -> bool:
        """Backpropagate ``loss`` and, on the step's last micro-batch, step optimizer(s) ``name``.

        Accumulation-aware: the loss is divided by ``grad_accum_steps``; grads of
        these optimizers' params are zeroed before the first micro-batch's
        backward (dropping grads other losses left on them) and the optimizer
        steps (after clipping to ``max_grad_norm``) on the last one. With
        ``grad_accum_steps == 1`` it may be called any number of times per step
        (e.g. 4 critic updates per generator update); with accumulation, at
        most once per name per micro-batch (otherwise the two losses would be
        silently merged into one update). Returns True when it stepped.
        """
        names = [name] if isinstance(name, str) else list(name)
        unknown = [n for n in names if n not in self.optimizers]
        if unknown or not names:
            raise KeyError(f"update: unknown optimizer(s) {unknown or names}; have {sorted(self.optimizers)}")
        clash = self._updated_in_micro.intersection(names)
        if clash and self.grad_accum_steps > 1:
            raise RuntimeError(
                f"update({sorted(clash)}) called twice in one micro-batch with grad_accum_steps="
                f"{self.grad_accum_steps}; gate repeated updates on ctx.step instead"
            )
        self._updated_in_micro.update(names)
        if self.micro_step == 0:
            for n in names:
                self._optimizer(n).zero_grad(set_to_none=True)
        if not is_finite(loss):
            self._loss_bad.update(names)
        scaled = loss / self.grad_accum_steps if self.grad_accum_steps > 1 else loss  # x / 1 is x: skip the op
        if self._plain_backward:
            scaled.backward()
        else:
            self.accelerator.backward(scaled)
        if not self.sync_gradients:
            return False
        return self._clip_and_step(names, loss)

    def _clip_and_step(self, names: list[str], loss: torch.Tensor) -> bool:
        max_norm = self.config.max_grad_norm
        params = [p for n in names for p in self._params[n]]
        key = "grad_norm" if set(names) == set(self.optimizers) else "grad_norm/" + "+".join(names)
        if max_norm is not None:
            if self.accelerator.distributed_type in _SHARDED:
                norm = self.accelerator.clip_grad_norm_(params, max_norm)
            else:
                # Unscale only these optimizers: Accelerate's clip_grad_norm_
                # unscales all of them, which breaks fp16 with several optimizers.
                for n in names:
                    self.accelerator.unscale_gradients(self.optimizers[n])
                norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        else:
            norm = None if self.accelerator.distributed_type in _SHARDED else grad_norm(params)
        if self._update_is_bad(names, norm):
            self._drop_update(names, loss, norm)
            return False
        if norm is not None and max_norm is not None:
            self.log({key: norm})
        for n in names:
            opt = self._optimizer(n)
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.optimizer_steps[n] += 1
            self._consecutive_skips[n] = 0
        return True

    def _optimizer(self, name: str) -> Any:
        """The optimizer whose ``step`` / ``zero_grad`` to call: the bare one where Accelerate's wrapper would
        only forward to it (see `_bare_optimizer`), while Accelerate's own accumulation syncs gradients."""
        if self.accelerator.gradient_state.sync_gradients:
            return self._bare_optimizers[name]
        return self.optimizers[name]

    def _update_is_bad(self, names: list[str], norm: torch.Tensor | None) -> bool:
        """A NaN/inf loss on any process, or a NaN/inf gradient norm (decided alike on every process)."""
        bad = bool(self._loss_bad.intersection(names))
        self._loss_bad.difference_update(names)
        # Under fp16 an overflowing gradient is the grad scaler's to skip (it lowers its scale); not an error.
        if getattr(self.accelerator, "scaler", None) is None:
            bad = bad or not is_finite(norm)
        if self.accelerator.num_processes > 1:  # one process's NaN loss must stop every process
            flag = torch.tensor(float(bad), device=self.device)
            bad = bool(self.accelerator.reduce(flag, reduction="sum") > 0)
        return bad

    def _drop_update(self, names: list[str], loss: torch.Tensor, norm: torch.Tensor | None) -> None:
        """Apply ``config.on_nonfinite`` to a bad update: raise, or skip it and count."""
        for n in names:
            self.optimizers[n].zero_grad(set_to_none=True)
        text = describe_bad_update(self.step, names, loss, norm, self._pop_metrics_view(), self._last_checkpoint)
        if self.config.on_nonfinite == "raise":
            raise NonFiniteError(text)
        for n in names:
            self.skipped_updates[n] += 1
            self._consecutive_skips[n] += 1
            if self._consecutive_skips[n] >= MAX_CONSECUTIVE_SKIPS:
                raise NonFiniteError(f"{MAX_CONSECUTIVE_SKIPS} non-finite updates of {n!r} in a row, the last: {text}")
        self.log(skipped_updates=float(sum(self.skipped_updates.values())))
        warnings.warn(f"skipped {text.split('; the update')[0]} ({sum(self.skipped_updates.values())} skipped so far)",
                      RuntimeWarning, stacklevel=3)

    def _pop_metrics_view(self) -> dict[str, float]:
        """The metrics logged since the last record (means), without consuming them."""
        return {k: s / n for k, (s, n) in self._metrics.items()}

    @contextlib.contextmanager
    def frozen(self, *names: str) -> Iterator[None]:
        """Temporarily set ``requires_grad=False`` on the named models' params.

        Use it when a loss for one model runs through another (generator loss
        through the critic) so the other collects no gradient. Under DDP, run
        that other model as ``ctx.unwrap(name)(...)``: a forward through the
        DDP wrapper whose backward never reaches its params stalls DDP.
        """
        saved = [(p, p.requires_grad) for n in names for p in self.unwrap(n).parameters()]
        try:
            for p, _ in saved:
                p.requires_grad_(False)
            yield
        finally:
            for p, flag in saved:
                p.requires_grad_(flag)

    def mean(self, value: float | torch.Tensor) -> torch.Tensor:
        """Average ``value`` over processes (a collective: call it on every process)."""
        t = torch.as_tensor(value, dtype=torch.float32, device=self.device)
        return self.accelerator.reduce(t, reduction="mean")

    def request_stop(self) -> None:
        """End the run after this step (logged and checkpointed). Call it on every process."""
        self._stop = True

    # ------------------------------------------------- engine-side plumbing
    def _begin_step(self, step: int) -> None:
        self.step = step  # metrics keep accumulating until the engine logs them

    def _begin_micro(self, micro_step: int) -> None:
        self.micro_step = micro_step
        self._updated_in_micro = set()
        seed = self._seeds.get(self.step, micro_step)
        self.generator.manual_seed(seed)
        if self.cpu_generator is not self.generator:
            self.cpu_generator.manual_seed(seed)

    def _pop_metrics(self) -> dict[str, float | torch.Tensor]:
        out = self._pop_metrics_view()
        self._metrics = {}
        return out


def _bare_optimizer(opt: torch.optim.Optimizer, accelerator: Accelerator) -> torch.optim.Optimizer:
    """``opt``'s inner optimizer where Accelerate's wrapper adds nothing to ``step`` / ``zero_grad``.

    Without a grad scaler, XLA or a LOMO optimizer the wrapper's ``step`` is the inner one, yet it
    asks importlib twice per call whether ``lomo_optim`` is installed, and its ``zero_grad`` inspects
    the inner signature each call (~0.1 ms a step together): answered here once per run.
    """
    inner = getattr(opt, "optimizer", None)
    if (not isinstance(opt, AcceleratedOptimizer) or opt.scaler is not None
            or accelerator.distributed_type == DistributedType.XLA or getattr(accelerator, "has_lomo_optimizer", True)
            or "set_to_none" not in inspect.signature(inner.zero_grad).parameters):
        return opt
    return inner


def _plain_backward(accelerator: Accelerator) -> bool:
    """True when ``accelerator.backward(loss)`` is ``loss.backward()`` (no scaler, DeepSpeed, Megatron,
    LOMO or Accelerate-side accumulation), so the engine may call the latter directly."""
    return (getattr(accelerator, "scaler", None) is None and accelerator.gradient_accumulation_steps == 1
            and accelerator.distributed_type not in (DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)
            and not getattr(accelerator, "has_lomo_optimizer", True))
