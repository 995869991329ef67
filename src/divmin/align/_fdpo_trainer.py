"""`FDPOTrainer`: f-DPO on any Hugging Face causal LM, run by the shared engine.

One engine step takes ``batch_size`` preference pairs, runs the policy once on
the concatenated batch (chosen rows then rejected rows), gets the reference
log-probabilities (see ``FDPOConfig.reference``) and minimises
:func:`~divmin.align.fdpo_loss`. Everything else (devices, mixed precision,
accumulation, clipping, schedules, logging, checkpoints, exact resume) is the
engine's, configured by ``FDPOConfig.engine``.

Logged every ``engine.log_every`` steps: ``loss``, ``rewards/chosen``,
``rewards/rejected``, ``rewards/accuracies`` (fraction with chosen reward >
rejected reward), ``rewards/margins``, ``logps/chosen``, ``logps/rejected``
(summed response log-probabilities under the policy). With an eval split, every
``engine.eval_every`` steps (default: once, at the end): ``eval/loss``,
``eval/accuracy``, ``eval/ece`` and ``eval/rewards/margins``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..divergences import Divergence
from ..eval import top_label_calibration_error
from ..engine import (Bool, EngineConfig, Instance, Int, IsDivergence, MethodTrainer, Number, OneOf, StepContext,
                      StepOutput, trainable_adamw, validate)
from ..lm import sequence_logps
from ._fdpo import fdpo_loss
from ._preference_data import PreferenceCollator, tokenize_preferences

__all__ = ["FDPOConfig", "FDPOTrainer"]

_REFERENCES = ("copy", "adapter", "precomputed")


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=1000, log_every=10)


@dataclasses.dataclass
class FDPOConfig:
    """Settings of :class:`FDPOTrainer`; every field is checked on construction."""

    divergence: str | Divergence = "reverse_kl"  # f of the constraint D_f(pi_ref || pi); reverse_kl = DPO
    beta: float = 0.1  # strength of the divergence constraint (> 0)
    label_smoothing: float = 0.0  # conservative-loss label noise eps in [0, 0.5)
    lr: float = 5e-6  # AdamW learning rate (the engine's schedule multiplies it)
    weight_decay: float = 0.0  # AdamW weight decay
    batch_size: int = 8  # preference pairs per micro-batch (2x rows per forward)
    max_length: int = 512  # max prompt + response tokens per row; responses are cut on the right
    max_prompt_length: int = 256  # max prompt tokens; longer prompts keep their last tokens
    # Reference policy: "copy" = a frozen copy of the initial model (or `ref_model`),
    # "adapter" = the PEFT model with its adapter disabled (no extra memory),
    # "precomputed" = reference log-probs computed once before training and cached per example.
    reference: str = "copy"
    disable_dropout: bool = True  # set every nn.Dropout's p to 0 in policy and reference (as in DPO)
    eval_batch_size: int = 16  # pairs per forward in evaluation and reference precomputation
    ece_bins: int = 10  # equal-width confidence bins of eval/ece
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)  # training loop settings

    CHECKS = dict(  # one per field: divmin.engine.validate
        divergence=IsDivergence(capability="implicit_reward"), beta=Number(gt=0), label_smoothing=Number(ge=0, lt=0.5),
        lr=Number(gt=0), weight_decay=Number(ge=0), batch_size=Int(ge=1), max_length=Int(ge=1),
        max_prompt_length=Int(ge=1), reference=OneOf(_REFERENCES), disable_dropout=Bool(), eval_batch_size=Int(ge=1),
        ece_bins=Int(ge=1), engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.max_prompt_length >= self.max_length:
            raise ValueError(f"`max_prompt_length` ({self.max_prompt_length}) must be < `max_length` "
                             f"({self.max_length}) to leave room for the response")


# ----------------------------------------------------------------- helpers
def _disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def _forward_logps(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """(2B,) summed response log-probs of every row of a collated batch."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = getattr(out, "logits", None)
    if logits is None:
        raise TypeError(f"the model's forward returned {type(out).__name__} without `.logits`")
    return sequence_logps(logits, batch["labels"])


@torch.no_grad()
def _reference_logps(policy: nn.Module, reference: nn.Module | None, batch: dict[str, Tensor],
                     cache: Tensor | None = None) -> Tensor:
    """(2B,) reference log-probs: from ``cache`` (N, 2) by index, ``reference``, or the adapter-free policy."""
    if cache is not None:
        idx = batch["index"].cpu()
        return torch.cat([cache[idx, 0], cache[idx, 1]]).to(batch["input_ids"].device)
    if reference is None:
        with policy.disable_adapter():
            return _forward_logps(policy, batch)
    return _forward_logps(reference, batch)


def _to(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


@dataclasses.dataclass
class _FDPOState:
    """What outlives one ``fit``: the precomputed reference log-probs per split, (N, 2) [chosen, rejected]."""

    cache: dict[str, Tensor] | None = None


@torch.no_grad()
def _precompute(policy: nn.Module, reference: nn.Module | None, *, is_peft: bool,
                splits: dict[str, list[dict[str, Any]]], loader: Callable[[list], DataLoader],
                device: torch.device) -> dict[str, Tensor]:
    """Reference log-probs of every example of every split: {split: (N, 2) [chosen, rejected]}; ``reference``
    None means the initial ``policy`` itself (adapter disabled for PEFT)."""
    home = None
    if reference is not None:
        home = next(reference.parameters()).device
        reference.to(device)
    ref = reference if reference is not None or is_peft else policy  # the initial policy, before any step
    was_training, cache = policy.training, {}
    policy.eval()
    try:
        for split, examples in splits.items():
            table = torch.zeros(len(examples), 2)
            for batch in loader(examples):
                lp = _reference_logps(policy, ref, _to(batch, device)).float().cpu()
                table[batch["index"], 0], table[batch["index"], 1] = lp.chunk(2)
            cache[split] = table
    finally:
        policy.train(was_training)
        if home is not None:
            reference.to(home)
    return cache


class _FDPOTask:
    """The engine task of :class:`FDPOTrainer`; its only state is the reference cache (in ``state``)."""

    def __init__(self, *, config: FDPOConfig, model: nn.Module, reference: nn.Module | None, is_peft: bool,
                 train_examples: list[dict[str, Any]], eval_examples: list[dict[str, Any]] | None,
                 collator: Callable, state: _FDPOState) -> None:
        self.c, self.model, self.reference, self.is_peft = config, model, reference, is_peft
        self.train_examples, self.eval_examples = train_examples, eval_examples
        self.collator, self.state = collator, state
        self.static_models = ("reference",) if config.reference == "copy" else ()

    def _loader(self, examples: list[dict[str, Any]]) -> DataLoader:
        return DataLoader(examples, batch_size=self.c.eval_batch_size, shuffle=False, collate_fn=self.collator)

    def models(self) -> dict[str, nn.Module]:
        if self.c.reference == "copy":
            return {"policy": self.model, "reference": self.reference}
        return {"policy": self.model}

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        c = self.c
        return {"policy": trainable_adamw(models["policy"], lr=c.lr, weight_decay=c.weight_decay)}

    def batches(self, ctx: StepContext) -> DataLoader:
        if self.c.reference == "precomputed" and self.state.cache is None:
            splits = {"train": self.train_examples, "eval": self.eval_examples or []}
            self.state.cache = _precompute(ctx.unwrap("policy"), self.reference, is_peft=self.is_peft, splits=splits,
                                           loader=self._loader, device=ctx.device)
        return DataLoader(self.train_examples, batch_size=self.c.batch_size, shuffle=True, collate_fn=self.collator)

    def _logps(self, ctx: StepContext, batch: dict[str, Tensor], split: str, train: bool) -> tuple[Tensor, Tensor]:
        policy = ctx.unwrap("policy")
        reference = ctx.models.get("reference")
        cache = None if self.state.cache is None else self.state.cache[split]
        with ctx.accelerator.autocast():
            pol = _forward_logps(ctx.models["policy"] if train else policy, batch)
            ref = _reference_logps(policy, reference, batch, cache)
        return pol, ref

    def _loss(self, pol: Tensor, ref: Tensor):
        c, b = self.c, pol.shape[0] // 2
        return fdpo_loss(pol[:b], pol[b:], ref[:b], ref[b:], divergence=c.divergence, beta=c.beta,
                         label_smoothing=c.label_smoothing)

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> StepOutput:
        pol, ref = self._logps(ctx, batch, "train", train=True)
        out = self._loss(pol, ref)
        b = pol.shape[0] // 2
        chosen, rejected = out.chosen_rewards, out.rejected_rewards
        metrics = {
            "rewards/chosen": chosen.mean(), "rewards/rejected": rejected.mean(),
            "rewards/accuracies": (chosen > rejected).float().mean(), "rewards/margins": (chosen - rejected).mean(),
            "logps/chosen": pol[:b].detach().mean(), "logps/rejected": pol[b:].detach().mean(),
        }
        return StepOutput(loss=out.loss, metrics=metrics)

    def evaluate(self, ctx: StepContext) -> dict[str, Tensor]:
        if not self.eval_examples:
            return {}
        margins, loss_sum = [], torch.zeros((), dtype=torch.float64)
        for batch in self._loader(self.eval_examples):
            with torch.no_grad():
                pol, ref = self._logps(ctx, _to(batch, ctx.device), "eval", train=False)
                out = self._loss(pol, ref)
            margins.append((out.chosen_rewards - out.rejected_rewards).double().cpu())
            loss_sum += out.loss.double().cpu() * margins[-1].numel()
        m = torch.cat(margins)
        probs = torch.sigmoid(m)
        return {"loss": loss_sum / m.numel(), "accuracy": (m > 0).double().mean(),
                "ece": top_label_calibration_error(probs, torch.ones_like(probs), n_bins=self.c.ece_bins),
                "rewards/margins": m.mean()}

    def state_dict(self) -> dict[str, Tensor] | None:
        return None if self.state.cache is None else dict(self.state.cache)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.state.cache = {k: v.float().cpu() for k, v in state.items()}


class FDPOTrainer(MethodTrainer):
    """f-DPO fine-tuning of ``model`` on preference pairs.

    Args:
        model: a Hugging Face causal LM, a PEFT model, or any module whose
            ``forward(input_ids=..., attention_mask=...)`` returns an object with
            ``.logits`` of shape (B, T, V). Trained in place.
        tokenizer: a Hugging Face tokenizer (``pad_token_id`` or ``eos_token_id`` is used for padding).
        train_dataset / eval_dataset: preference rows (see ``_preference_data``): a
            list of dicts, a ``datasets.Dataset`` or a JSONL path. Tokenized here.
        ref_model: the reference policy for ``reference="copy"`` or
            ``"precomputed"`` (frozen, ``requires_grad`` set False). Default: for
            "copy" a deep copy of ``model`` taken here; for "precomputed" ``model``
            itself (adapter disabled for PEFT) at the start of the first ``fit``.
        config: an :class:`FDPOConfig` (keyword; None: defaults).

    ``fit(resume=False)`` runs the engine and returns its ``TrainResult``.
    Checkpoints hold the policy (for a PEFT model: all of its weights), the
    optimizer and, with ``reference="precomputed"``, the cached reference
    log-probs; a "copy" reference is rebuilt, never checkpointed.
    """

    trained_models = {"policy": "model"}  # the trained policy replaces `model`

    def __init__(self, model: nn.Module, tokenizer: Any, train_dataset: Any, *, eval_dataset: Any = None,
                 ref_model: nn.Module | None = None, config: FDPOConfig | None = None) -> None:
        config = self.use_config(config, FDPOConfig)
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        if ref_model is not None and (not isinstance(ref_model, nn.Module) or ref_model is model):
            raise ValueError("`ref_model` must be an nn.Module distinct from `model`")
        is_peft = callable(getattr(model, "disable_adapter", None))
        if config.reference == "adapter" and (not is_peft or ref_model is not None):
            raise ValueError("`reference`='adapter' needs a PEFT `model` (with disable_adapter()) and no `ref_model`")
        self.model, self.tokenizer = model, tokenizer
        self.collator = PreferenceCollator(_pad_id(tokenizer))
        kw = dict(max_length=config.max_length, max_prompt_length=config.max_prompt_length)
        self.train_examples = tokenize_preferences(train_dataset, tokenizer, name="train_dataset", **kw)
        self.eval_examples = (None if eval_dataset is None
                              else tokenize_preferences(eval_dataset, tokenizer, name="eval_dataset", **kw))
        self.is_peft = is_peft
        self.reference = self._build_reference(ref_model)
        if config.disable_dropout:
            for m in (model, self.reference):
                if m is not None:
                    _disable_dropout(m)
        self._state = _FDPOState()  # the precomputed reference log-probs, kept across fits

    def _build_reference(self, ref_model: nn.Module | None) -> nn.Module | None:
        """The frozen reference module; None means "the policy itself" (adapter disabled for PEFT)."""
        mode = self.config.reference
        if mode == "adapter" or (mode == "precomputed" and ref_model is None):
            return None
        ref = ref_model if ref_model is not None else copy.deepcopy(self.model)
        ref.requires_grad_(False)
        return ref.eval()

    @property
    def cache(self) -> dict[str, Tensor] | None:
        """Precomputed reference log-probs per split, (N, 2) [chosen, rejected] (``reference="precomputed"``,
        after the first ``fit``; else None)."""
        return self._state.cache

    def make_task(self) -> _FDPOTask:
        return _FDPOTask(config=self.config, model=self.model, reference=self.reference, is_peft=self.is_peft,
                         train_examples=self.train_examples, eval_examples=self.eval_examples,
                         collator=self.collator, state=self._state)

    def evaluates(self) -> bool:
        return bool(self.eval_examples)

    def batch_logps(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(policy, reference) summed response log-probs, each (2B,), of a collated batch; no grad.

        Runs on the policy's device in its current mode; "precomputed" needs the cache
        (built by ``fit``).
        """
        if self.config.reference == "precomputed" and self.cache is None:
            raise RuntimeError("reference='precomputed': the cache is built by fit(); call it first")
        device = next(self.model.parameters()).device
        batch = _to(batch, device)
        with torch.no_grad():
            pol = _forward_logps(self.model, batch)
        ref = _reference_logps(self.model, self.reference, batch, None if self.cache is None else self.cache["train"])
        return pol, ref


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    raise ValueError("`tokenizer` has neither pad_token_id nor eos_token_id; set tokenizer.pad_token")
