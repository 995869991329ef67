"""`DistillTrainer`: knowledge distillation on the shared engine, for causal LMs and classifiers.

Per micro-batch the loss is

    L = alpha * c_T * D(teacher || student) + (1 - alpha) * CE(labels, student) + beta * SinKD,

(the CE term, and its ``hard`` metric, only when alpha < 1 gives it weight),

with D any registry divergence (:func:`~divmin.distill.token_kd_loss`, averaged
over completion tokens or examples), c_T = T^2 when ``temperature_squared`` (as
in Hinton et al.) else 1, and SinKD the batch-level Sinkhorn loss
(:func:`~divmin.distill.sinkd_loss`; over examples, or over all completion
tokens of the batch for causal LMs, at O(tokens^2 V)).

Causal LMs see prompt/completion pairs and distil on completion tokens only. Once a
step's completions are final its batch is compacted (:func:`divmin.lm.compact`: rows
rolled to column 0, padding columns cut) and both models' heads run on the completion
positions alone (:func:`divmin.lm.counted_logits`); neither changes the losses or
their gradients beyond float rounding.
Where the completions come from (as in GKD, Agarwal et al. 2024):

* off-policy: the dataset's completions (``lmbda = 0``, ``seq_kd = False``);
* sequence-level KD (Kim & Rush 2016): ``seq_kd = True`` replaces them by teacher samples;
* on-policy: with probability ``lmbda`` per micro-batch they are replaced by student
  samples (drawn after the teacher's when both are on).

Samples come from :func:`divmin.lm.sample_completions` with the engine's ``ctx.generator``
(re-seeded every micro-batch), so runs resume exactly and DDP processes draw differently.

Everything else (devices, mixed precision, accumulation, clipping, schedules,
logging, checkpoints, exact resume) is the engine's, set by ``DistillConfig.engine``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..divergences import Divergence, as_divergence
from ..engine import (Bool, EngineConfig, Instance, Int, IsDivergence, MethodTrainer, Number, OneOf, StepContext,
                      StepOutput, is_default, trainable_adamw, validate)
from ..lm import IGNORE, assemble, sample_completions
from ._cache import TeacherCache
from ._fused import BACKENDS, fused_linear_cross_entropy, fused_linear_kd_loss
from ._sinkd import sinkd_loss
from ._tasks import DISTILL_TASKS, DistillTaskKind, lm_inputs
from ._token import token_kd_loss

__all__ = ["DistillConfig", "DistillTrainer"]


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=1000, log_every=10)


@dataclasses.dataclass
class DistillConfig:
    """Settings of :class:`DistillTrainer`; every field is checked on construction."""

    task: str = "causal_lm"  # "causal_lm" (KD on completions) or "sequence_classification" (DISTILL_TASKS)
    divergence: str | Divergence = "forward_kl"  # D(teacher || student) of the soft loss
    temperature: float = 1.0  # softmax temperature T of the soft loss (> 0)
    temperature_squared: bool = False  # multiply the soft loss by T^2 (Hinton et al.'s gradient scale)
    alpha: float = 1.0  # weight of the soft loss; the hard cross-entropy gets 1 - alpha
    sinkd_weight: float = 0.0  # beta of SinKD (0 = off); the research code's effective weight is 0.001 * 0.8
    sinkd_mode: str = "reference"  # "reference" (research code) or "log" (divmin.sinkhorn)
    sinkd_epsilon: float = 0.1  # entropic regularisation of SinKD
    sinkd_iters: int = 20  # normalisation rounds of the reference mode
    sinkd_temperature: float = 2.0  # SinKD's own softmax temperature
    lmbda: float = 0.0  # causal_lm: probability that a micro-batch is on-policy (student samples), as GKD
    seq_kd: bool = False  # causal_lm: train on teacher samples instead of dataset completions
    max_new_tokens: int = 32  # causal_lm: completion length cap when sampling
    generation_temperature: float = 1.0  # causal_lm: sampling temperature (> 0)
    # causal_lm: soft (and hard) loss by fused_linear_kd_loss on base_model hidden states, never forming the
    # logits; None: wherever it applies (bias-free output Linear on both models, no SinKD, no TeacherCache),
    # since it gives the same loss and gradients (to float rounding) faster and in less memory
    fused: bool | None = None
    fused_backend: str = "auto"  # fused: "auto" (Triton on CUDA when installed), "torch" or "triton"
    lr: float = 1e-4  # AdamW learning rate (the engine's schedule multiplies it)
    weight_decay: float = 0.0  # AdamW weight decay
    batch_size: int = 8  # rows per micro-batch
    eval_batch_size: int = 64  # rows per forward in evaluate()
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)  # training loop settings

    CHECKS = dict(  # one per field: divmin.engine.validate
        task=OneOf(DISTILL_TASKS), divergence=IsDivergence(), temperature=Number(gt=0), temperature_squared=Bool(),
        alpha=Number(ge=0, le=1), sinkd_weight=Number(ge=0), sinkd_mode=OneOf(("reference", "log")),
        sinkd_epsilon=Number(gt=0), sinkd_iters=Int(ge=1), sinkd_temperature=Number(gt=0), lmbda=Number(ge=0, le=1),
        seq_kd=Bool(), max_new_tokens=Int(ge=1), generation_temperature=Number(gt=0), fused=Bool(optional=True),
        fused_backend=OneOf(BACKENDS), lr=Number(gt=0), weight_decay=Number(ge=0), batch_size=Int(ge=1),
        eval_batch_size=Int(ge=1), engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        DISTILL_TASKS.get(self.task).check_config(self)
        if self.fused is True and self.sinkd_weight > 0:
            raise ValueError("`sinkd_weight` > 0 is not supported with `fused=True` (SinKD needs the logits)")
        if self.fused is False and not is_default(self, "fused_backend"):
            raise ValueError(f"`fused_backend` applies with `fused` True or None only, got {self.fused_backend!r}")
        for name in ("sinkd_mode", "sinkd_epsilon", "sinkd_iters", "sinkd_temperature"):
            if self.sinkd_weight == 0 and not is_default(self, name):
                raise ValueError(f"`{name}` applies with `sinkd_weight` > 0 only (SinKD is off)")


def _resample(model: nn.Module, batch: dict[str, Tensor], **sampling: Any) -> dict[str, Tensor]:
    """The batch with its completions replaced by ``model``'s samples (drawn from ``sampling["generator"]``)."""
    comp = sample_completions(model, batch["prompt_ids"], batch["prompt_mask"], **sampling)
    return assemble(batch["prompt_ids"], batch["prompt_mask"], comp.tokens, comp.mask)


def _bare(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside a DDP wrapper (``.module``) and a peft wrapper (``get_base_model()``:
    the adapted model itself, its adapter layers injected in place, so its backbone trains them too).
    A prompt-learning adapter (prompt, prefix, P-tuning) lives in the wrapper's forward, which the fused
    path would bypass: ValueError."""
    model = getattr(model, "module", model)
    if getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        raise ValueError("`fused=True` cannot train a prompt-learning peft adapter (its virtual tokens are added "
                         "by the wrapper's forward, which the fused path bypasses); use fused=False")
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def _head(model: nn.Module) -> tuple[nn.Module, Tensor]:
    """(backbone returning ``last_hidden_state``, output-projection weight) of a Hugging Face causal LM."""
    model = _bare(model)
    head = model.get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        raise ValueError("`fused=True` needs a model whose output projection is a bias-free Linear")
    return model.base_model, head.weight


def _fuses(config: DistillConfig, model: nn.Module, teacher: nn.Module | TeacherCache) -> bool:
    """Whether the soft loss runs fused: ``config.fused``, or with None, wherever the fused path applies."""
    if config.fused is not None:
        return config.fused
    if config.task != "causal_lm" or config.sinkd_weight > 0 or not isinstance(teacher, nn.Module):
        return False
    try:
        bare = [_bare(m) for m in (model, teacher)]
    except ValueError:  # a prompt-learning adapter: the logits path
        return False
    for m in bare:
        get = getattr(m, "get_output_embeddings", None)
        head = get() if callable(get) else None
        # a head with an adapter on it is no plain Linear; a model without a separate backbone has none to call
        if type(head) is not nn.Linear or head.bias is not None or getattr(m, "base_model", m) is m:
            return False
    return True


@dataclasses.dataclass(frozen=True)
class _KDLoss:
    """The per-batch losses of :class:`DistillTrainer`, a callable ``(student, teacher, batch) -> parts``
    the task runs as the student's forward; ``cache`` replaces the teacher when given."""

    config: DistillConfig
    kind: DistillTaskKind
    div: Divergence
    cache: TeacherCache | None
    fused: bool = False  # `_fuses`: config.fused resolved for the models

    def __call__(self, student: nn.Module, teacher: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``soft`` (c_T x divergence), ``hard`` (CE; only when ``alpha`` < 1 gives it weight) and, if
        used, ``sinkd`` for one batch. The soft loss is the chunked closed form with analytic gradients."""
        c = self.config
        scale = c.temperature ** 2 if c.temperature_squared else 1.0
        labels = batch["labels"]
        if self.fused:  # causal_lm only (DistillConfig, `_fuses`)
            return self._fused(student, teacher, batch, scale)
        # (N, V) logits at the counted rows only: the losses read nothing else, so the head skips the rest
        s = self.kind.counted(student, batch)  # ctx.call passes the bare module
        # with alpha = 1 the hard loss has no weight: neither computed nor backpropagated
        out = {} if c.alpha == 1 else {"hard": F.cross_entropy(s.float(), labels[labels != IGNORE])}
        if self.cache is not None:  # the cached rows are the batch's completion tokens in order (TeacherCache)
            out["soft"] = scale * token_kd_loss(s, self.cache(batch["cache_row"], device=s.device),
                                                divergence=self.div, temperature=c.temperature)
            return out
        with torch.no_grad():
            t = self.kind.counted(teacher, batch)
        out["soft"] = scale * token_kd_loss(s, t, divergence=self.div, temperature=c.temperature)
        if c.sinkd_weight > 0:
            out["sinkd"] = s.sum() * 0.0 if s.shape[0] == 0 else sinkd_loss(
                s, t, epsilon=c.sinkd_epsilon, n_iters=c.sinkd_iters, temperature=c.sinkd_temperature,
                mode=c.sinkd_mode)
        return out

    def _fused(self, student: nn.Module, teacher: nn.Module, batch: dict[str, Tensor],
               scale: float) -> dict[str, Tensor]:
        c, labels = self.config, batch["labels"]
        s_body, s_w = _head(student)
        t_body, t_w = _head(teacher)
        keep = labels != IGNORE  # the counted rows only: the losses read nothing else
        hs = s_body(**lm_inputs(batch)).last_hidden_state[keep]
        with torch.no_grad():
            ht = t_body(**lm_inputs(batch)).last_hidden_state[keep]
        out = {"soft": scale * fused_linear_kd_loss(hs, s_w, ht, t_w, divergence=self.div,
                                                   temperature=c.temperature, backend=c.fused_backend)}
        if c.alpha < 1:  # chunked too: neither loss holds (tokens x vocab) logits
            out["hard"] = fused_linear_cross_entropy(hs, s_w, labels[keep], ignore_index=IGNORE)
        return out

    @torch.no_grad()
    def metrics(self, student: nn.Module, teacher: nn.Module | TeacherCache, rows: Any,
                collate: Callable) -> dict[str, float]:
        """Held-out ``ce``, ``divergence``, ``teacher_agreement`` and the kind's report on ``rows``."""
        c = self.config
        student = getattr(student, "module", student)
        device = next(student.parameters()).device
        was_training = student.training
        student.eval()
        sums = torch.zeros(4, dtype=torch.float64)  # ce, divergence, agreement, correct
        count = 0
        try:
            for batch in DataLoader(rows, batch_size=c.eval_batch_size, collate_fn=collate):
                batch = {k: v.to(device) for k, v in batch.items()}
                batch = self.kind.compact(batch)
                s = self.kind.counted(student, batch).float()
                t = s if self.cache is not None else self.kind.counted(teacher.to(device), batch).float()
                y = batch["labels"][batch["labels"] != IGNORE]
                n = y.numel()
                sums += torch.tensor([
                    float(F.cross_entropy(s, y, reduction="sum")),
                    float(token_kd_loss(s, t, divergence=self.div, temperature=c.temperature)) * n,
                    float((s.argmax(-1) == t.argmax(-1)).sum()), float((s.argmax(-1) == y).sum())], dtype=torch.float64)
                count += n
        finally:
            student.train(was_training)
        mean = (sums / max(count, 1)).tolist()
        out = {"ce": mean[0]}
        if self.cache is None:  # a cache holds no teacher for held-out rows
            out.update(divergence=mean[1], teacher_agreement=mean[2])
        out.update(self.kind.report(mean[0], mean[3]))
        return out


class _DistillTask:
    """The engine task of :class:`DistillTrainer`. ``kind`` is the ``DISTILL_TASKS`` member (rows,
    compaction, counted logits); ``losses(student, teacher_or_cache, batch)`` the per-batch loss
    parts; ``evaluate()`` the held-out metrics (None: no held-out rows)."""

    def __init__(self, *, config: DistillConfig, model: nn.Module, teacher: nn.Module | TeacherCache,
                 cache: TeacherCache | None, kind: DistillTaskKind, train_rows: Any, collate: Callable,
                 losses: Callable[..., dict[str, Tensor]], evaluate: Callable[[], dict[str, float]] | None,
                 eos_id: int | None, pad_id: int | None) -> None:
        self.c, self.model, self.teacher, self.cache, self.kind = config, model, teacher, cache, kind
        self.train_rows, self.collate, self.losses, self._evaluate = train_rows, collate, losses, evaluate
        self.eos_id, self.pad_id = eos_id, pad_id
        self.static_models = () if cache is not None else ("teacher",)

    def models(self) -> dict[str, nn.Module]:
        if self.cache is not None:  # a TeacherCache is no model: nothing to place or wrap
            return {"student": self.model}
        return {"student": self.model, "teacher": self.teacher}

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        c = self.c
        return {"student": trainable_adamw(models["student"], lr=c.lr, weight_decay=c.weight_decay)}

    def batches(self, ctx: StepContext) -> DataLoader:
        return DataLoader(self.train_rows, batch_size=self.c.batch_size, shuffle=True, collate_fn=self.collate)

    def _completions(self, batch: dict[str, Tensor], ctx: StepContext) -> tuple[dict[str, Tensor], float]:
        c = self.c
        kw = dict(max_new_tokens=c.max_new_tokens, temperature=c.generation_temperature, eos_id=self.eos_id,
                  pad_id=self.pad_id, generator=ctx.generator)
        if c.seq_kd:
            batch = _resample(ctx.models["teacher"], batch, **kw)
        on_policy = c.lmbda > 0 and float(torch.rand((), generator=ctx.cpu_generator)) < c.lmbda
        if on_policy:
            batch = _resample(ctx.unwrap("student"), batch, **kw)
        return batch, float(on_policy)

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> StepOutput:
        metrics: dict[str, Any] = {}
        if self.kind.samples:
            batch, metrics["on_policy"] = self._completions(batch, ctx)
        batch = self.kind.compact(batch)  # completions are final: no model work on padding columns
        # as the student's forward, so that DDP averages the gradients of the fused path too
        parts = ctx.call("student", self.losses, ctx.models["teacher"] if self.cache is None else self.cache, batch)
        c = self.c
        loss = c.alpha * parts["soft"] + ((1 - c.alpha) * parts["hard"] if "hard" in parts else 0.0)
        if c.sinkd_weight > 0:
            loss = loss + c.sinkd_weight * parts["sinkd"]
        metrics.update({k: v.detach() for k, v in parts.items()})
        return StepOutput(loss=loss, metrics=metrics)

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        return self._evaluate() if self._evaluate is not None else {}


class DistillTrainer(MethodTrainer):
    """Distil ``teacher`` into ``model`` (the student) on ``train_dataset``.

    Args:
        model: the student, trained in place. causal_lm: a Hugging Face causal LM
            (``forward(input_ids, attention_mask, position_ids)`` with ``.logits``; a KV cache
            speeds up on-policy / sequence-level KD sampling). sequence_classification:
            any module returning logits (B, C) or an object with ``.logits``, called as
            ``model(x)`` when rows have an ``x`` entry, else ``model(**inputs)``.
        teacher: the teacher, same calling convention; frozen here (``requires_grad`` off). Or a
            :class:`~divmin.distill.TeacherCache` of ``train_dataset`` (causal_lm, off-policy KD
            only): its temperature, tokenizer and token ids must match, and ``evaluate`` then
            reports ``ce`` and ``ppl`` only.
        train_dataset / eval_dataset: causal_lm: rows with ``prompt``/``completion`` text
            (needs ``tokenizer``) or ``prompt_ids``/``completion_ids``.
            sequence_classification: rows (dicts of tensors) with a ``labels`` entry and
            the model inputs, collated by ``torch.utils.data.default_collate``.
        tokenizer: for text rows and default pad/EOS ids.
        config: a :class:`DistillConfig` (keyword; None: defaults).
        pad_id / eos_id: override the tokenizer's (causal_lm).

    ``fit(resume=False)`` runs the engine; ``evaluate(dataset=None)`` returns held-out
    ``ce`` (and ``ppl`` for causal LMs, ``accuracy`` for classifiers), the mean soft
    divergence ``divergence`` and ``teacher_agreement`` (argmax match rate).
    """

    trained_models = {"student": "model"}  # the trained student replaces `model`

    def __init__(self, model: nn.Module, teacher: nn.Module | TeacherCache, train_dataset: Any, *,
                 eval_dataset: Any = None, tokenizer: Any = None, config: DistillConfig | None = None,
                 pad_id: int | None = None, eos_id: int | None = None) -> None:
        config = self.use_config(config, DistillConfig)
        self.cache = teacher if isinstance(teacher, TeacherCache) else None
        for name, m in (("model", model), ("teacher", model if self.cache is not None else teacher)):
            if not isinstance(m, nn.Module):
                raise TypeError(f"`{name}` must be a torch.nn.Module, got {type(m).__name__}")
        if model is teacher:
            raise ValueError("`teacher` must be a module distinct from `model`")
        self.model, self.tokenizer = model, tokenizer
        self.teacher = teacher if self.cache is not None else teacher.requires_grad_(False).eval()
        self.div = as_divergence(config.divergence)
        self.task = DISTILL_TASKS.get(config.task)
        self._loss = _KDLoss(config, self.task, self.div, self.cache, _fuses(config, model, teacher))
        self.pad_id, self.eos_id = self.task.token_ids(config, tokenizer, pad_id, eos_id)
        self.collate = self.task.collator(self.pad_id)
        self.train_rows = self.task.rows(train_dataset, tokenizer, "train_dataset")
        self.eval_rows = None if eval_dataset is None else self.task.rows(eval_dataset, tokenizer, "eval_dataset")
        if self.cache is not None:
            self.train_rows, self.collate = self.cache.attach(self.train_rows, self.collate, config, tokenizer)

    def losses(self, student: nn.Module, teacher: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``soft`` (c_T x divergence), ``hard`` (CE; only when ``alpha`` < 1 gives it weight) and, if
        used, ``sinkd`` for one batch (see :class:`_KDLoss`)."""
        return self._loss(student, teacher, batch)

    # -------------------------------------------------------------- running
    def make_task(self) -> _DistillTask:
        return _DistillTask(config=self.config, model=self.model, teacher=self.teacher, cache=self.cache,
                            kind=self.task, train_rows=self.train_rows, collate=self.collate, losses=self._loss,
                            evaluate=functools.partial(self._loss.metrics, self.model, self.teacher, self.eval_rows,
                                                       self.collate) if self.eval_rows else None, eos_id=self.eos_id,
                            pad_id=self.pad_id)

    def evaluates(self) -> bool:
        return bool(self.eval_rows)

    @torch.no_grad()
    def evaluate(self, dataset: Any = None) -> dict[str, float]:
        """Held-out metrics on ``dataset`` (rows as for training; default: the eval split)."""
        rows = self.eval_rows if dataset is None else self.task.rows(dataset, self.tokenizer, "dataset")
        if not rows:
            raise ValueError("no evaluation rows: pass `dataset` or an `eval_dataset`")
        return self._loss.metrics(self.model, self.teacher, rows, self.collate)
