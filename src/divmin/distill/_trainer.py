"""`DistillTrainer`: knowledge distillation on the shared engine, for causal LMs and classifiers.

Per micro-batch the loss is

    L = alpha * c_T * D(teacher || student) + (1 - alpha) * CE(labels, student) + beta * SinKD,

with D any registry divergence (:func:`~divmin.distill.token_kd_loss`, averaged
over completion tokens or examples), c_T = T^2 when ``temperature_squared`` (as
in Hinton et al.) else 1, and SinKD the batch-level Sinkhorn loss
(:func:`~divmin.distill.sinkd_loss`; over examples, or over all completion
tokens of the batch for causal LMs, at O(tokens^2 V)).

Causal LMs see prompt/completion pairs and distil on completion tokens only.
Where the completions come from (as in GKD, Agarwal et al. 2024):

* off-policy: the dataset's completions (``lmbda = 0``, ``seq_kd = False``);
* sequence-level KD (Kim & Rush 2016): ``seq_kd = True`` replaces them by teacher samples;
* on-policy: with probability ``lmbda`` per micro-batch they are replaced by student
  samples (drawn after the teacher's when both are on).

Everything else (devices, mixed precision, accumulation, clipping, schedules,
logging, checkpoints, exact resume) is the engine's, set by ``DistillConfig.engine``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..divergences import Divergence, as_divergence
from ..engine import EngineConfig, StepContext, StepOutput, Trainer, TrainResult
from ._fused import BACKENDS, fused_linear_cross_entropy, fused_linear_kd_loss
from ._lm_data import IGNORE, LMCollator, sample_completions, tokenize_pairs
from ._sinkd import sinkd_loss
from ._token import token_kd_loss

__all__ = ["DistillConfig", "DistillTrainer"]

_TASKS = ("causal_lm", "sequence_classification")


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=1000, log_every=10)


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclasses.dataclass
class DistillConfig:
    """Settings of :class:`DistillTrainer`; every field is checked on construction."""

    task: str = "causal_lm"  # "causal_lm" (token-level KD on completions) or "sequence_classification"
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
    fused: bool = False  # causal_lm: soft loss by fused_linear_kd_loss on base_model hidden states
    fused_backend: str = "auto"  # fused: "auto" (Triton on CUDA when installed), "torch" or "triton"
    lr: float = 1e-4  # AdamW learning rate (the engine's schedule multiplies it)
    weight_decay: float = 0.0  # AdamW weight decay
    batch_size: int = 8  # rows per micro-batch
    eval_batch_size: int = 64  # rows per forward in evaluate()
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)  # training loop settings

    def __post_init__(self) -> None:
        if self.task not in _TASKS:
            raise ValueError(f"`task` must be one of {_TASKS}, got {self.task!r}")
        as_divergence(self.divergence)  # unknown names fail here, listing the valid ones
        for name in ("temperature", "sinkd_epsilon", "generation_temperature", "lr"):
            if not (_num(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"`{name}` must be a finite number > 0, got {getattr(self, name)!r}")
        for name in ("alpha", "lmbda"):
            if not (_num(getattr(self, name)) and 0 <= getattr(self, name) <= 1):
                raise ValueError(f"`{name}` must lie in [0, 1], got {getattr(self, name)!r}")
        for name in ("sinkd_weight", "weight_decay", "sinkd_temperature"):
            if not (_num(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"`{name}` must be a finite number >= 0, got {getattr(self, name)!r}")
        if self.sinkd_mode not in ("reference", "log"):
            raise ValueError(f"`sinkd_mode` must be 'reference' or 'log', got {self.sinkd_mode!r}")
        for name in ("sinkd_iters", "max_new_tokens", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")
        for name in ("temperature_squared", "seq_kd", "fused"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be a bool, got {getattr(self, name)!r}")
        if self.fused_backend not in BACKENDS:
            raise ValueError(f"`fused_backend` must be one of {BACKENDS}, got {self.fused_backend!r}")
        if self.task == "sequence_classification" and (self.lmbda > 0 or self.seq_kd or self.fused):
            raise ValueError("`lmbda`, `seq_kd` and `fused` apply to task='causal_lm' only")
        if not isinstance(self.engine, EngineConfig):
            raise ValueError(f"`engine` must be an EngineConfig, got {type(self.engine).__name__}")


def _logits(out: Any) -> Tensor:
    logits = getattr(out, "logits", out)
    if not isinstance(logits, Tensor):
        raise TypeError(f"the model returned {type(out).__name__}, neither a tensor nor an object with `.logits`")
    return logits


def _lm_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}


def _forward(model: nn.Module, batch: dict[str, Tensor], task: str) -> Tensor:
    """Logits of a batch: causal LMs get ids, masks and positions; classifiers ``model(x)`` for rows
    with an ``x`` entry, else ``model(**inputs)`` with every entry but ``labels``."""
    if task == "causal_lm":
        return _logits(model(**_lm_inputs(batch)))
    if "x" in batch:
        return _logits(model(batch["x"]))
    return _logits(model(**{k: v for k, v in batch.items() if k != "labels"}))


def _head(model: nn.Module) -> tuple[nn.Module, Tensor]:
    """(backbone returning ``last_hidden_state``, output-projection weight) of a Hugging Face causal LM."""
    head = model.get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        raise ValueError("`fused=True` needs a model whose output projection is a bias-free Linear")
    return model.base_model, head.weight


class _DistillTask:
    def __init__(self, owner: "DistillTrainer") -> None:
        self.o = owner
        self.static_models = ("teacher",)

    def models(self) -> dict[str, nn.Module]:
        return {"student": self.o.model, "teacher": self.o.teacher}

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        params = [p for p in models["student"].parameters() if p.requires_grad]
        if not params:
            raise ValueError("`model` has no parameter with requires_grad=True")
        c = self.o.config
        return {"student": torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)}

    def batches(self, ctx: StepContext) -> DataLoader:
        return DataLoader(self.o.train_rows, batch_size=self.o.config.batch_size, shuffle=True,
                          collate_fn=self.o.collate)

    def _completions(self, batch: dict[str, Tensor], ctx: StepContext) -> tuple[dict[str, Tensor], float]:
        c, o = self.o.config, self.o
        kw = dict(max_new_tokens=c.max_new_tokens, temperature=c.generation_temperature, eos_id=o.eos_id,
                  pad_id=o.pad_id)
        if c.seq_kd:
            batch = sample_completions(ctx.models["teacher"], batch, **kw)
        on_policy = c.lmbda > 0 and float(torch.rand((), generator=ctx.cpu_generator)) < c.lmbda
        if on_policy:
            batch = sample_completions(ctx.unwrap("student"), batch, **kw)
        return batch, float(on_policy)

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> StepOutput:
        metrics: dict[str, Any] = {}
        if self.o.config.task == "causal_lm":
            batch, metrics["on_policy"] = self._completions(batch, ctx)
        # as the student's forward, so that DDP averages the gradients of the fused path too
        parts = ctx.call("student", self.o.losses, ctx.models["teacher"], batch)
        c = self.o.config
        loss = c.alpha * parts["soft"] + (1 - c.alpha) * parts["hard"]
        if c.sinkd_weight > 0:
            loss = loss + c.sinkd_weight * parts["sinkd"]
        metrics.update({k: v.detach() for k, v in parts.items()})
        return StepOutput(loss=loss, metrics=metrics)

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        return self.o.evaluate() if self.o.eval_rows else {}


class DistillTrainer:
    """Distil ``teacher`` into ``model`` (the student) on ``train_dataset``.

    Args:
        model: the student, trained in place. causal_lm: a Hugging Face causal LM
            (``forward(input_ids, attention_mask, position_ids)`` with ``.logits``, and
            ``generate`` for on-policy / sequence-level KD). sequence_classification:
            any module returning logits (B, C) or an object with ``.logits``, called as
            ``model(x)`` when rows have an ``x`` entry, else ``model(**inputs)``.
        teacher: the teacher, same calling convention; frozen here (``requires_grad`` off).
        train_dataset / eval_dataset: causal_lm: rows with ``prompt``/``completion`` text
            (needs ``tokenizer``) or ``prompt_ids``/``completion_ids``.
            sequence_classification: rows (dicts of tensors) with a ``labels`` entry and
            the model inputs, collated by ``torch.utils.data.default_collate``.
        tokenizer: for text rows and default pad/EOS ids.
        config: a :class:`DistillConfig`.
        pad_id / eos_id: override the tokenizer's (causal_lm).

    ``train(resume=False)`` runs the engine; ``evaluate(dataset=None)`` returns held-out
    ``ce`` (and ``ppl`` for causal LMs, ``accuracy`` for classifiers), the mean soft
    divergence ``divergence`` and ``teacher_agreement`` (argmax match rate).
    """

    def __init__(self, model: nn.Module, teacher: nn.Module, train_dataset: Any, *, eval_dataset: Any = None,
                 tokenizer: Any = None, config: DistillConfig | None = None, pad_id: int | None = None,
                 eos_id: int | None = None) -> None:
        config = DistillConfig() if config is None else config
        if not isinstance(config, DistillConfig):
            raise TypeError(f"`config` must be a DistillConfig, got {type(config).__name__}")
        for name, m in (("model", model), ("teacher", teacher)):
            if not isinstance(m, nn.Module):
                raise TypeError(f"`{name}` must be a torch.nn.Module, got {type(m).__name__}")
        if model is teacher:
            raise ValueError("`teacher` must be a module distinct from `model`")
        self.model, self.teacher, self.config = model, teacher.requires_grad_(False).eval(), config
        self.tokenizer = tokenizer
        self.div = as_divergence(config.divergence)
        if config.task == "causal_lm":
            self.pad_id = _token_id(pad_id, tokenizer, ("pad_token_id", "eos_token_id"), "pad_id")
            self.eos_id = _token_id(eos_id, tokenizer, ("eos_token_id",), "eos_id") \
                if (config.lmbda > 0 or config.seq_kd or eos_id is not None) else None
            self.collate = LMCollator(self.pad_id)
            self.train_rows = tokenize_pairs(train_dataset, tokenizer, "train_dataset")
            self.eval_rows = None if eval_dataset is None else tokenize_pairs(eval_dataset, tokenizer, "eval_dataset")
        else:
            self.collate = torch.utils.data.default_collate
            self.train_rows, self.eval_rows = list(train_dataset), None if eval_dataset is None else list(eval_dataset)
            if not self.train_rows:
                raise ValueError("`train_dataset` is empty")
        self.engine: Trainer | None = None

    # ------------------------------------------------------------------ losses
    def losses(self, student: nn.Module, teacher: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``soft`` (c_T x divergence), ``hard`` (CE) and, if used, ``sinkd`` for one batch."""
        c = self.config
        scale = c.temperature ** 2 if c.temperature_squared else 1.0
        labels = batch["labels"]
        kw = dict(divergence=self.div, temperature=c.temperature)
        if c.task == "causal_lm" and c.fused:
            return self._fused_losses(student, teacher, batch, scale)
        s = _forward(student, batch, c.task)
        with torch.no_grad():
            t = _forward(teacher, batch, c.task)
        out = {"hard": F.cross_entropy(s.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE)}
        if c.task == "causal_lm":
            out["soft"] = scale * token_kd_loss(s, t, labels=labels, **kw)
            keep = labels != IGNORE
            s_rows, t_rows = s[keep], t[keep]
        else:
            out["soft"] = scale * token_kd_loss(s, t, **kw)
            s_rows, t_rows = s, t
        if c.sinkd_weight > 0 and s_rows.shape[0] > 0:
            out["sinkd"] = sinkd_loss(s_rows, t_rows, epsilon=c.sinkd_epsilon, n_iters=c.sinkd_iters,
                                      temperature=c.sinkd_temperature, mode=c.sinkd_mode)
        elif c.sinkd_weight > 0:
            out["sinkd"] = s.sum() * 0.0
        return out

    def _fused_losses(self, student: nn.Module, teacher: nn.Module, batch: dict[str, Tensor],
                      scale: float) -> dict[str, Tensor]:
        c, labels = self.config, batch["labels"]
        s_body, s_w = _head(student.module if hasattr(student, "module") else student)
        t_body, t_w = _head(teacher)
        hs = s_body(**_lm_inputs(batch)).last_hidden_state
        with torch.no_grad():
            ht = t_body(**_lm_inputs(batch)).last_hidden_state
        out = {"soft": scale * fused_linear_kd_loss(hs, s_w, ht, t_w, divergence=self.div, labels=labels,
                                                   temperature=c.temperature, backend=c.fused_backend)}
        # chunked too: neither loss holds (tokens x vocab) logits; with alpha = 1 CE is only reported
        with torch.set_grad_enabled(torch.is_grad_enabled() and c.alpha < 1):
            out["hard"] = fused_linear_cross_entropy(hs, s_w, labels, ignore_index=IGNORE)
        if c.sinkd_weight > 0:
            raise ValueError("`sinkd_weight` > 0 is not supported with `fused=True`")
        return out

    # -------------------------------------------------------------- running
    def train(self, resume: bool | str = False) -> TrainResult:
        """Run ``config.engine.max_steps`` steps (see ``divmin.engine.Trainer.fit`` for ``resume``)."""
        engine = self.config.engine
        if self.eval_rows and engine.eval_every is None:
            engine = dataclasses.replace(engine, eval_every=engine.max_steps)
        self.engine = Trainer(_DistillTask(self), engine)
        result = self.engine.fit(resume=resume)
        self.model = self.engine.models["student"]
        return result

    @torch.no_grad()
    def evaluate(self, dataset: Any = None) -> dict[str, float]:
        """Held-out metrics on ``dataset`` (rows as for training; default: the eval split)."""
        c = self.config
        rows = self.eval_rows if dataset is None else (
            tokenize_pairs(dataset, self.tokenizer, "dataset") if c.task == "causal_lm" else list(dataset))
        if not rows:
            raise ValueError("no evaluation rows: pass `dataset` or an `eval_dataset`")
        student = getattr(self.model, "module", self.model)
        device = next(student.parameters()).device
        was_training = student.training
        student.eval()
        sums = torch.zeros(4, dtype=torch.float64)  # ce, divergence, agreement, correct
        count = 0
        try:
            for batch in DataLoader(rows, batch_size=c.eval_batch_size, collate_fn=self.collate):
                batch = {k: v.to(device) for k, v in batch.items()}
                labels = batch["labels"]
                s = _forward(student, batch, c.task).float()
                t = _forward(self.teacher.to(device), batch, c.task).float()
                keep = labels != IGNORE
                s, t, y = s[keep], t[keep], labels[keep]
                n = y.numel()
                sums += torch.tensor([
                    float(F.cross_entropy(s, y, reduction="sum")),
                    float(token_kd_loss(s, t, divergence=self.div, temperature=c.temperature)) * n,
                    float((s.argmax(-1) == t.argmax(-1)).sum()), float((s.argmax(-1) == y).sum())], dtype=torch.float64)
                count += n
        finally:
            student.train(was_training)
        mean = (sums / max(count, 1)).tolist()
        out = {"ce": mean[0], "divergence": mean[1], "teacher_agreement": mean[2]}
        out.update({"ppl": math.exp(mean[0])} if c.task == "causal_lm" else {"accuracy": mean[3]})
        return out


def _token_id(value: int | None, tokenizer: Any, attrs: tuple[str, ...], name: str) -> int:
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`{name}` must be an int, got {value!r}")
        return value
    for attr in attrs:
        found = getattr(tokenizer, attr, None)
        if isinstance(found, int):
            return found
    raise ValueError(f"`{name}`: give it explicitly or pass a `tokenizer` with {' / '.join(attrs)}")
