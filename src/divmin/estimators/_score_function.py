"""The score-function (policy-gradient) estimate of grad D_f(P || Q), with importance weights and a baseline.

In DESIGN.md's convention D_f(P || Q) = E_Q[f(r)], r = P / Q, and since
d/dtheta [Q f(P/Q)] = (f(r) - r f'(r)) dQ/dtheta (P fixed),

    grad_theta D_f(P || Q) = E_Q[ g(r) grad log Q ],        g(r) = f(r) - r f'(r).

The model's samples may come from a proposal q instead (a frozen model, a replay
buffer): with w = Q / q,

    grad_theta D_f(P || Q) = E_q[ w (g(r) - b) grad log Q ]

for any b that does not depend on the sample (E_Q[grad log Q] = 0), the baseline
that reduces the variance. :func:`score_function_surrogate` returns the scalar
mean_i sg[w_i (g(r_i) - b)] log Q(x_i), whose autograd gradient is this estimate;
-g(r) is the per-sample pseudo-reward. The estimator only needs log r: f-DPG
forms it from an energy-based target (log r = s - log Z - log Q), DiDi-Instruct
from a discriminator's logit. :class:`MovingBaseline` keeps b as an exponential
moving average of the weighted mean of g.

References: Khalifa, Elsahar & Dymetman, "A Distributional Approach to Controlled
Text Generation" (DPG, 2021); Go et al., "Aligning Language Models with
Preferences through f-divergence Minimization" (f-DPG, 2023); Zheng et al.,
"Ultra-Fast Language Generation via Discrete Diffusion Divergence Instruct"
(DiDi-Instruct, 2025).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ..divergences import Divergence, as_divergence
from ..divergences.kernels import NonFiniteInputError, check_float_tensor, check_log_probs, check_real

__all__ = ["MovingBaseline", "ScoreFunctionOutput", "score_function_surrogate"]


class ScoreFunctionOutput(NamedTuple):
    loss: Tensor  # scalar surrogate; its gradient is the estimate of grad D_f(P || Q)
    pseudo_rewards: Tensor  # (B,) -g(r), detached (before the baseline)
    weights: Tensor  # (B,) importance weights Q / q, detached (ones on-policy)
    log_ratio: Tensor  # (B,) log r = log P - log Q, detached


def _check(model_logps: Tensor, log_ratio: Tensor, log_weights: Tensor | None, baseline: object) -> None:
    check_log_probs("model_logps", model_logps)
    for name, t in (("log_ratio", log_ratio), ("log_weights", log_weights)):
        if name == "log_weights" and t is None:
            continue
        check_float_tensor(name, t)
        if t.shape != model_logps.shape:
            raise ValueError(f"`{name}` must have the shape of `model_logps` {tuple(model_logps.shape)}, "
                             f"got {tuple(t.shape)}")
        if bool(torch.isnan(t).any()):
            raise NonFiniteInputError(f"`{name}` contains NaN")
    if log_weights is not None and bool((log_weights == math.inf).any()):
        raise ValueError("`log_weights` contains +inf (an infinite importance weight: the proposal gives "
                         "probability 0 to a sample it produced)")
    if baseline is None:
        return
    if not isinstance(baseline, Tensor) or baseline.numel() == 1 and baseline.dim() == 0:
        check_real("baseline", baseline)
        return
    check_float_tensor("baseline", baseline)
    if baseline.dim() > 1 or (baseline.dim() == 1 and baseline.shape != model_logps.shape):
        raise ValueError(f"`baseline` must be a scalar or have the shape of `model_logps` "
                         f"{tuple(model_logps.shape)}, got {tuple(baseline.shape)}")
    if not bool(torch.isfinite(baseline).all()):
        raise ValueError("`baseline` must be finite")


def score_function_surrogate(model_logps: Tensor, log_ratio: Tensor, *, divergence: "str | Divergence",
                             log_weights: Tensor | None = None,
                             baseline: "Tensor | float | None" = None) -> ScoreFunctionOutput:
    """Surrogate loss whose gradient is mean_i w_i (g(r_i) - b) grad log Q(x_i), an estimate of grad D_f(P || Q).

    Args:
        model_logps: (B,) log Q(x_i) under the model, with grad (the only input that gets one).
        log_ratio: (B,) log r_i = log P(x_i) - log Q(x_i), e.g. s - log Z - log Q for an
            energy-based target or a discriminator's logit; ``-inf`` where P has no mass.
        divergence: registry name or ``Divergence``.
        log_weights: (B,) log w_i = log Q(x_i) - log q(x_i) of the proposal q the samples came
            from; ``None`` means on-policy (q = Q, weights 1).
        baseline: scalar or (B,) b subtracted from g (constant across samples for an unbiased estimate).

    Returns:
        :class:`ScoreFunctionOutput` (loss, pseudo_rewards = -g(r), weights, log_ratio).
        Samples of weight 0 contribute nothing, whatever their g.

    Raises:
        ValueError: where g(r) is infinite on a sample of positive weight (D_f itself is then infinite).

    Reverse KL, g = 1 - log r, on-policy: REINFORCE with reward log r (up to the constant 1).

    >>> logq = torch.log_softmax(torch.zeros(3, requires_grad=True), 0)
    >>> out = score_function_surrogate(logq, torch.log(torch.tensor([1.5, 1.0, 0.5])), divergence="reverse_kl")
    >>> [round(float(v), 4) for v in out.pseudo_rewards]  # -g(r) = log r - 1
    [-0.5945, -1.0, -1.6931]
    """
    div = as_divergence(divergence)
    _check(model_logps, log_ratio, log_weights, baseline)
    # g is evaluated in fp32 or wider whatever the model's dtype: bf16 log-probs would round log r
    dtype = torch.promote_types(log_ratio.dtype, torch.float32)
    with torch.no_grad():
        log_r = log_ratio.detach().to(dtype)
        g = div.g(log_r)
        weights = torch.ones_like(log_r) if log_weights is None else log_weights.detach().to(dtype).exp()
        bad = ~torch.isfinite(g) & (weights > 0)
        if bool((bad & (log_r == math.inf)).any()):
            raise ValueError(f"{div}: log r = +inf on a sample of positive weight: the model gives it probability 0 "
                             "(`model_logps` = -inf) while the target does not; such a sample cannot come from the "
                             "model: pass the proposal it came from (`log_weights`)")
        if bool(bad.any()):
            raise ValueError(f"{div}: g(r) is not finite on {int(bad.sum())} sample(s) (log r = "
                             f"{float(log_r[bad][0]):.3g}): a target that gives zero mass to samples "
                             "the model produces makes this divergence infinite: smooth the target "
                             "(a hard constraint: smooth the constraint, e.g. PointwiseConstraint(..., "
                             "epsilon=1e-3)) or use a divergence with finite f(0) (forward KL, JS, TV, "
                             "Hellinger, alpha in (0, 1))")
        if isinstance(baseline, Tensor):
            g_centred = g - baseline.detach().to(g.device, dtype)
        else:
            g_centred = g if baseline is None else g - torch.tensor(baseline, dtype=dtype, device=g.device)
        coef = weights * g_centred
        # a zero weight times an infinite g (or log Q = -inf) would be NaN: such samples carry no mass
        live = weights > 0
        coef = coef.where(live, torch.zeros_like(coef))
    logq = model_logps if bool(live.all()) else model_logps.where(live, torch.zeros_like(model_logps))
    # in fp32 or wider: large importance weights overflow half precision (the gradient reaching
    # half-precision log-probs may still be inf, which the engine's non-finite guard reports)
    loss = (coef * logq.to(dtype)).mean()
    return ScoreFunctionOutput(loss, -g, weights, log_r)


class MovingBaseline:
    """Exponential moving average of the importance-weighted mean of g, the baseline b of the surrogate.

    After each batch, b <- decay * b + (1 - decay) * sum_i w_i g_i / sum_i w_i (the first
    batch sets b); use ``baseline()`` *before* ``update`` so that b never depends on the
    batch it centres (which would bias the estimate). ``value`` is None until the first update.

    >>> b = MovingBaseline(decay=0.5)
    >>> out = ScoreFunctionOutput(torch.tensor(0.0), torch.tensor([-1.0, -3.0]), torch.tensor([1.0, 1.0]),
    ...                           torch.zeros(2))
    >>> b.update(out), b.update(out._replace(pseudo_rewards=torch.tensor([0.0, 0.0])))
    (2.0, 1.0)
    """

    def __init__(self, decay: float = 0.9) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"`decay` must be a number in [0, 1), got {decay!r}")
        self.decay, self.value = decay, None

    def __call__(self) -> float | None:
        return self.value

    def update(self, output: ScoreFunctionOutput) -> float:
        """Fold in a batch (any output with ``weights`` and ``pseudo_rewards``); returns the new b."""
        w = output.weights
        wg = (w * -output.pseudo_rewards).where(w > 0, torch.zeros_like(w))  # weight 0: no mass, whatever g
        batch = float(wg.sum() / w.sum().clamp_min(1e-30))
        self.value = batch if self.value is None else self.decay * self.value + (1 - self.decay) * batch
        return self.value
