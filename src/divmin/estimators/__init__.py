"""divmin.estimators: what turns a divergence into a gradient, shared by the methods.

* :func:`score_function_surrogate` (+ :class:`MovingBaseline`): the policy-gradient
  estimate E_q[w (g(r) - b) grad log Q] of grad D_f(P || Q) from log r, with
  importance weights w = Q / q of a proposal and a baseline b (f-DPG, DiDi-Instruct).
* :func:`self_normalized_log_z` (+ :class:`LogZEstimator`, running and per context):
  log Z of an energy-based target from proposal samples.
* :func:`pooled_divergence` (+ :func:`mixture_log_density`, :func:`effective_sample_size`):
  D_f(P || Q) from samples pooled over several proposals (balance heuristic), e.g. a
  base model and the policy; Kish's effective sample size of importance weights;
  :func:`importance_mean`, the unbiased E_Q[v] from samples of one proposal.
* :func:`logistic_discriminator_loss` and :class:`LogRatioEstimator`: a logistic
  critic whose optimal logit is log p / q, and its logits turned into a clamped,
  per-level normalised log r (f-distill, DiDi-Instruct).

Depends on :mod:`divmin.divergences` and torch only; methods build on it, never the reverse.
"""

from ._density_ratio import LogRatioEstimator, logistic_discriminator_loss
from ._log_z import LogZEstimator, self_normalized_log_z
from ._mixture_is import effective_sample_size, importance_mean, mixture_log_density, pooled_divergence
from ._score_function import MovingBaseline, ScoreFunctionOutput, score_function_surrogate

# the API page (members_order: __all__) lists the entry points first, internals last
__all__ = [
    "score_function_surrogate",
    "self_normalized_log_z",
    "logistic_discriminator_loss",
    "LogRatioEstimator",
    "LogZEstimator",
    "MovingBaseline",
    "importance_mean",
    "effective_sample_size",
    "ScoreFunctionOutput",
    "mixture_log_density",
    "pooled_divergence",
]
