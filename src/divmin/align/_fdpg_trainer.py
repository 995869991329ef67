"""`FDPGTrainer`: f-DPG on any Hugging Face causal LM toward an energy-based target.

Each engine step takes ``contexts_per_step`` contexts (prompts; one empty
context for an unconditional target), draws ``samples_per_context``
completions of each from the proposal (the policy online; a frozen copy
offline), scores them with the target (base-model log-probabilities plus the
target's scorers on the decoded texts), updates the running log Z of each
context and minimises :func:`~divmin.align.fdpg_loss`.

Offline mode follows DPG: every ``proposal_update_every`` steps the forward
KL to the target of the policy and of the proposal are estimated on fresh
proposal samples, KL(P || pi) = E_q[(P/q) log(P/pi)], and the proposal is
replaced by the policy when the policy is closer.

Logged: ``loss``, ``log_z`` (mean over the step's contexts), ``pseudo_reward``
(mean -g), ``ess`` (normalised effective sample size of the importance
weights pi / q), ``ess_target`` (that of P / q: forward KL's gradient weights, whose
variance grows as it falls), ``kl_target_policy`` / ``kl_policy_target`` / ``tv`` / ``js``
(importance-sampled with the running log Z and unnormalised weights pi / q, unbiased
given log Z: :func:`divmin.estimators.pooled_divergence`; the self-normalised pi / q weights
used before are biased at small N), ``alignment`` (the mean of each pointwise constraint
under the policy), ``entropy`` (-E log pi),
``distinct2`` and ``length``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ..divergences import Divergence, as_divergence
from ..engine import (EngineConfig, Instance, Int, IsDivergence, MethodTrainer, Number, OneOf, StepContext,
                      StepOutput, is_default, trainable_adamw, validate)
from ..estimators import LogZEstimator, MovingBaseline, effective_sample_size, importance_mean, pooled_divergence
from ..eval import distinct_n
from ..lm import Completions, completion_logps, sample_n
from ._fdpg import fdpg_loss
from ._targets import EnergyTarget, PointwiseConstraint

__all__ = ["FDPGConfig", "FDPGTrainer"]

_MODES = ("online", "offline")
# logged name -> registry member: D_f(P || pi) estimated on every step's samples
_LOGGED_DIVERGENCES = {"kl_target_policy": "forward_kl", "kl_policy_target": "reverse_kl", "tv": "total_variation",
                       "js": "js"}


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=500, log_every=10)


@dataclasses.dataclass
class FDPGConfig:
    """Settings of :class:`FDPGTrainer`; every field is checked on construction."""

    divergence: str | Divergence = "js"  # f of D_f(P || pi); reverse_kl = KL-regularised RL, forward_kl = DPG
    lr: float = 1e-5  # AdamW learning rate (the engine's schedule multiplies it)
    weight_decay: float = 0.0  # AdamW weight decay
    contexts_per_step: int = 4  # contexts drawn per step (1 if the target is unconditional)
    samples_per_context: int = 16  # completions per context and step
    max_new_tokens: int = 32  # completion length cap
    mode: str = "online"  # "online": sample from the policy; "offline": from a frozen proposal (DPG)
    proposal_update_every: int = 10  # offline: steps between "is the policy closer to P than q?" checks
    baseline_decay: float | None = 0.9  # moving-average baseline of g; None: no baseline
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)  # training loop settings

    CHECKS = dict(  # one per field: divmin.engine.validate
        divergence=IsDivergence(), lr=Number(gt=0), weight_decay=Number(ge=0), contexts_per_step=Int(ge=1),
        # >= 2: log Z and the baseline are estimated per context
        samples_per_context=Int(ge=2), max_new_tokens=Int(ge=1), mode=OneOf(_MODES), proposal_update_every=Int(ge=1),
        baseline_decay=Number(ge=0, lt=1, optional=True), engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.mode != "offline" and not is_default(self, "proposal_update_every"):
            raise ValueError(f"`proposal_update_every` applies to `mode`='offline' only, got mode={self.mode!r}")


@dataclasses.dataclass
class _Codec:
    """Contexts to prompt ids (cached) and completions to texts, with ``tokenizer``."""

    tokenizer: Any
    eos_id: int
    prompts: dict[str, Tensor] = dataclasses.field(default_factory=dict)

    def prompt_ids(self, context: str) -> Tensor:
        if context not in self.prompts:
            if context:
                ids = self.tokenizer(context, add_special_tokens=False)["input_ids"]
            else:
                bos = getattr(self.tokenizer, "bos_token_id", None)
                ids = [bos if bos is not None else self.eos_id]
            self.prompts[context] = torch.tensor(ids, dtype=torch.long)
        return self.prompts[context]

    def decode(self, comp: Completions) -> list[str]:
        rows = [t[m & (t != self.eos_id)].tolist() for t, m in zip(comp.tokens.cpu(), comp.mask.cpu())]
        return self.tokenizer.batch_decode(rows, skip_special_tokens=True)


@dataclasses.dataclass
class _FDPGState:
    """What outlives one ``fit`` (carried from one ``fit`` call to the next): the running log Z
    estimates, the moving baselines per context (None: off) and the count of proposal replacements."""

    log_z: LogZEstimator
    baselines: dict[str, MovingBaseline] | None
    proposal_updates: int = 0


class _FDPGTask:
    """Engine task of :class:`FDPGTrainer` (the policy, the frozen base and, offline, the proposal).

    ``prompt_ids(context)`` encodes a context, ``decode(completions)`` gives the texts the target scores.
    """

    def __init__(self, *, config: FDPGConfig, model: nn.Module, base_model: nn.Module, proposal: nn.Module | None,
                 target: EnergyTarget, divergence: Divergence, contexts: list[str], prompt_ids: Callable[[str], Tensor],
                 decode: Callable[[Completions], list[str]], eos_id: int, pad_id: int, state: _FDPGState) -> None:
        self.c, self.model, self.base_model, self.proposal = config, model, base_model, proposal
        self.target, self.divergence, self.contexts = target, divergence, contexts
        self.prompt_ids, self.decode, self.eos_id, self.pad_id = prompt_ids, decode, eos_id, pad_id
        self.state, self.log_z, self.baselines = state, state.log_z, state.baselines
        self.static_models = ("base",)

    def models(self) -> dict[str, nn.Module]:
        out = {"policy": self.model, "base": self.base_model}
        if self.c.mode == "offline":
            out["proposal"] = self.proposal
        return out

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        c = self.c
        return {"policy": trainable_adamw(models["policy"], lr=c.lr, weight_decay=c.weight_decay)}

    def _draw(self, ctx: StepContext, model: nn.Module, context: str) -> tuple[Tensor, Completions]:
        prompt = self.prompt_ids(context).to(ctx.device)
        c = self.c
        return prompt, sample_n(model, prompt, c.samples_per_context, max_new_tokens=c.max_new_tokens,
                                eos_id=self.eos_id, pad_id=self.pad_id, generator=ctx.generator)

    def _score(self, ctx: StepContext, prompt: Tensor, comp: Completions) -> Tensor:
        with torch.no_grad():
            base = completion_logps(ctx.models["base"], prompt, comp)
        return self.target.log_score(self.decode(comp), base_logps=base.float())

    def train_step(self, batch: Any, ctx: StepContext) -> StepOutput:
        c, policy = self.c, ctx.models["policy"]
        offline = c.mode == "offline"
        idx = torch.randint(len(self.contexts), (c.contexts_per_step,), generator=ctx.cpu_generator).tolist()
        total, logs = 0.0, []
        for context in (self.contexts[i] for i in idx):
            prompt, comp = self._draw(ctx, ctx.models["proposal"] if offline else policy, context)
            scores = self._score(ctx, prompt, comp)
            logq = completion_logps(policy, prompt, comp)
            with torch.no_grad():
                prop = completion_logps(ctx.models["proposal"], prompt, comp) if offline else logq.detach()
            log_z = self.log_z.update(scores, prop, [context] * len(scores))[0]
            base = self.baselines[context] if self.baselines is not None else None
            out = fdpg_loss(logq, scores, divergence=self.divergence, proposal_logps=prop if offline else None,
                            log_z=log_z, baseline=base() if base is not None else None)
            if base is not None:
                base.update(out)
            total = total + out.loss / len(idx)
            logs.append(self._metrics(comp, scores, logq.detach(), prop, log_z, out))
        if offline and (ctx.step + 1) % c.proposal_update_every == 0:
            self._maybe_replace_proposal(ctx)
        return StepOutput(loss=total, metrics={k: sum(m[k] for m in logs) / len(logs) for k in logs[0]})

    def _metrics(self, comp: Completions, scores: Tensor, logq: Tensor, prop: Tensor, log_z: Tensor, out) -> dict:
        """Per-context logs; every expectation under pi is the unbiased (1/N) sum (pi/q) v with the running
        log Z (:func:`~divmin.estimators.pooled_divergence`, :func:`~divmin.estimators.importance_mean`);
        online q = pi and the weights are 1."""
        logq, prop, scores = logq.cpu(), prop.cpu(), scores.cpu()
        div = {name: pooled_divergence(logq, scores, prop[None], [len(logq)], divergence=spec, log_z=float(log_z))
               for name, spec in _LOGGED_DIVERGENCES.items()}
        w = out.weights
        metrics = {"log_z": float(log_z), "pseudo_reward": float(out.pseudo_rewards.mean()),
                   "ess": float(w.sum() ** 2 / (w ** 2).sum().clamp_min(1e-30) / len(w)),
                   "ess_target": effective_sample_size(scores - prop), **div,
                   "entropy": -importance_mean(logq, logq, prop), "length": float(comp.mask.sum(1).float().mean())}
        texts = self.decode(comp)
        for k, fac in enumerate(f for f in self.target.factors if isinstance(f, PointwiseConstraint)):
            b = fac.satisfied(texts).float()
            metrics[f"alignment{k or ''}"] = importance_mean(b, logq, prop)
        metrics["distinct2"] = distinct_n([t.split() for t in texts], 2)
        return metrics

    @torch.no_grad()
    def _maybe_replace_proposal(self, ctx: StepContext) -> None:
        """DPG's rule: q <- pi when KL(P || pi) < KL(P || q), both estimated on fresh q samples."""
        gaps = []
        for context in self.contexts[: self.c.contexts_per_step]:
            prompt, comp = self._draw(ctx, ctx.models["proposal"], context)
            s = self._score(ctx, prompt, comp)
            prop = completion_logps(ctx.models["proposal"], prompt, comp)
            pol = completion_logps(ctx.models["policy"], prompt, comp)
            # KL(P||pi) - KL(P||q) = E_P[log q - log pi], with P = exp(s - log Z): unbiased given log Z
            gaps.append(importance_mean(prop - pol, s - self.log_z.log_z(context), prop))
        if float(ctx.mean(sum(gaps) / len(gaps))) < 0:  # averaged over processes: one decision for all
            ctx.models["proposal"].load_state_dict(ctx.unwrap("policy").state_dict())
            self.state.proposal_updates += 1

    @torch.no_grad()
    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        logs = []
        policy = ctx.models["policy"]
        for context in self.contexts[: max(1, self.c.contexts_per_step)]:
            prompt, comp = self._draw(ctx, policy, context)
            scores = self._score(ctx, prompt, comp)
            logq = completion_logps(policy, prompt, comp)
            log_z = torch.tensor(self.log_z.log_z(context))
            out = fdpg_loss(logq, scores, divergence=self.divergence, log_z=log_z)
            logs.append(self._metrics(comp, scores, logq, logq, log_z, out))
        return {k: sum(m[k] for m in logs) / len(logs) for k in logs[0]}

    def state_dict(self) -> dict:
        return {"log_z": self.log_z.state_dict(), "proposal_updates": self.state.proposal_updates,
                "baselines": None if self.baselines is None else [self.baselines[c].value for c in self.contexts]}

    def load_state_dict(self, state: dict) -> None:
        self.log_z.load_state_dict(state["log_z"])
        self.state.proposal_updates = int(state["proposal_updates"])
        if self.baselines is not None:
            for c, v in zip(self.contexts, state["baselines"]):
                self.baselines[c].value = v


class FDPGTrainer(MethodTrainer):
    """Align ``model`` to ``target`` by minimising D_f(P || pi) with f-DPG.

    Args:
        model: the policy, a Hugging Face causal LM (or a module with the same call
            returning ``.logits``); trained in place.
        tokenizer: its tokenizer (decodes samples for the scorers; encodes contexts).
        target: an :class:`EnergyTarget` whose scorers take the decoded completion
            texts; its ``base`` is ignored: the base log-probabilities come from
            ``base_model`` (default: a frozen copy of the initial ``model``).
        contexts: prompts for a conditional target; ``None``: unconditional (every
            sample starts from the tokenizer's BOS, or EOS when it has none).
        config: an :class:`FDPGConfig` (keyword; None: defaults).

    ``fit(resume=False)`` runs the engine; the running log Z estimates carry over
    from one ``fit`` call to the next.
    """

    trained_models = {"policy": "model"}  # the trained policy replaces `model`

    def __init__(self, model: nn.Module, tokenizer: Any, target: EnergyTarget, *,
                 base_model: nn.Module | None = None, contexts: Sequence[str] | None = None,
                 config: FDPGConfig | None = None) -> None:
        if not isinstance(target, EnergyTarget):
            raise TypeError(f"`target` must be an EnergyTarget, got {type(target).__name__}")
        if contexts is not None and (isinstance(contexts, str) or not contexts):
            raise ValueError("`contexts` must be a non-empty sequence of strings (or None)")
        self.use_config(config, FDPGConfig)
        self.model, self.tokenizer, self.target = model, tokenizer, target
        self.divergence = as_divergence(self.config.divergence)
        self.base_model = (base_model if base_model is not None else copy.deepcopy(model)).requires_grad_(False)
        self.proposal = copy.deepcopy(model).requires_grad_(False) if self.config.mode == "offline" else None
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        if self.eos_id is None:
            raise ValueError("`tokenizer` needs an eos_token_id (completions stop at EOS)")
        self.contexts = list(contexts) if contexts is not None else [""]
        self._codec = _Codec(tokenizer, self.eos_id)
        decay = self.config.baseline_decay
        baselines = {c: MovingBaseline(decay) for c in self.contexts} if decay is not None else None
        self._state = _FDPGState(LogZEstimator(), baselines)

    def prompt_ids(self, context: str) -> Tensor:
        """(P,) token ids of ``context`` ("": the BOS, or EOS when the tokenizer has none)."""
        return self._codec.prompt_ids(context)

    def decode(self, comp: Completions) -> list[str]:
        """The texts of completions (up to their EOS), as the target's scorers read them."""
        return self._codec.decode(comp)

    @property
    def proposal_updates(self) -> int:
        """How often the offline proposal was replaced by the policy (DPG's rule), over every ``fit``."""
        return self._state.proposal_updates

    def make_task(self) -> _FDPGTask:
        return _FDPGTask(config=self.config, model=self.model, base_model=self.base_model, proposal=self.proposal,
                         target=self.target, divergence=self.divergence, contexts=self.contexts,
                         prompt_ids=self._codec.prompt_ids, decode=self._codec.decode, eos_id=self.eos_id,
                         pad_id=self.pad_id, state=self._state)

    def log_z(self, context: str = "") -> float:
        """The running estimate of log Z for ``context`` ("" when unconditional)."""
        return self._state.log_z.log_z(context)
