"""Energy-based targets: P(x) proportional to a(x) * prod_k phi_k(x), in log space.

A target is a base model a (anything that gives log a(x) for samples) times
scorers, each a plain callable on samples returning one value per sample:

- :class:`PointwiseConstraint` b(x) in {0, 1} (GDC): log(b + epsilon); with
  ``epsilon = 0`` failed samples get ``-inf`` and the target is a(x) b(x) / Z
  exactly (then any f with f(0) = inf, e.g. reverse KL, is infinite; smooth it).
- :class:`RewardTilt` exp(r(x) / beta): the optimum of KL-regularised RLHF.
- :class:`DistributionalConstraint` exp(lambda . phi(x)), whose lambda is fitted
  by :func:`fit_moments` so that E_P[phi] equals requested moments (GDC's
  maximum-entropy / minimum-KL projection of a onto the moment constraints).

Compose with ``*``: ``EnergyTarget(base) * PointwiseConstraint(has_word)``.

>>> t = EnergyTarget(lambda x: torch.zeros(len(x))) * PointwiseConstraint(lambda x: [v > 1 for v in x])
>>> t.log_score([0, 2, 3]).tolist()
[-inf, 0.0, 0.0]
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from ..divergences.kernels import check_real

__all__ = ["DistributionalConstraint", "EnergyTarget", "MomentFit", "PointwiseConstraint", "RewardTilt",
           "fit_moments"]

Samples = Any  # token-id tensor (B, L), a list of texts, ...: whatever the scorers understand


def _as_vector(values: Any, n: int | None, name: str) -> Tensor:
    out = torch.as_tensor(values, dtype=torch.float32) if not isinstance(values, Tensor) else values.float()
    if out.dim() != 1 or (n is not None and out.shape[0] != n):
        raise ValueError(f"{name} must return one value per sample, got shape {tuple(out.shape)}")
    return out


@dataclasses.dataclass(frozen=True)
class PointwiseConstraint:
    """log factor log(b(x) + epsilon) for a binary b (anything truthy counts as satisfied)."""

    fn: Callable[[Samples], Any]  # samples -> (B,) booleans / 0-1 values
    epsilon: float = 0.0  # smoothing: b + epsilon keeps failed samples at finite log score

    def __post_init__(self) -> None:
        check_real("epsilon", self.epsilon, ge=0)

    def satisfied(self, samples: Samples) -> Tensor:
        return _as_vector(self.fn(samples), None, "PointwiseConstraint.fn") > 0

    def __call__(self, samples: Samples) -> Tensor:
        b = self.satisfied(samples).float()
        return torch.log(b + self.epsilon) if self.epsilon else torch.log(b)


@dataclasses.dataclass(frozen=True)
class RewardTilt:
    """log factor r(x) / beta: the target a(x) exp(r(x) / beta) / Z is the KL-RLHF optimum."""

    fn: Callable[[Samples], Any]  # samples -> (B,) rewards
    beta: float = 1.0  # temperature of the tilt (the KL coefficient of RLHF)

    def __post_init__(self) -> None:
        check_real("beta", self.beta, gt=0)

    def __call__(self, samples: Samples) -> Tensor:
        return _as_vector(self.fn(samples), None, "RewardTilt.fn") / self.beta


@dataclasses.dataclass(frozen=True)
class DistributionalConstraint:
    """log factor lambda . phi(x); ``fit`` sets lambda so that E_P[phi] = ``moments``."""

    features: Callable[[Samples], Any]  # samples -> (B, K) feature values
    moments: tuple[float, ...]  # requested E_P[phi], one per feature
    lambdas: tuple[float, ...] | None = None  # None until fitted (acts as lambda = 0)

    def __post_init__(self) -> None:
        if self.lambdas is not None and len(self.lambdas) != len(self.moments):
            raise ValueError(f"`lambdas` has {len(self.lambdas)} entries for {len(self.moments)} moments")

    def phi(self, samples: Samples) -> Tensor:
        out = torch.as_tensor(self.features(samples), dtype=torch.float32)
        out = out[:, None] if out.dim() == 1 else out
        if out.dim() != 2 or out.shape[1] != len(self.moments):
            raise ValueError(f"features must return (B, {len(self.moments)}), got {tuple(out.shape)}")
        return out

    def __call__(self, samples: Samples) -> Tensor:
        lam = torch.tensor(self.lambdas or [0.0] * len(self.moments), dtype=torch.float32)
        return self.phi(samples) @ lam

    def fit(self, samples: Samples, log_weights: Tensor, **kwargs: Any) -> "DistributionalConstraint":
        """A copy with lambda fitted on ``samples`` weighted by ``log_weights`` = log a(x) - log q(x)
        (plus any other factors' log scores); see :func:`fit_moments`."""
        result = fit_moments(self.phi(samples), log_weights, torch.tensor(self.moments), **kwargs)
        return dataclasses.replace(self, lambdas=tuple(result.lambdas.tolist()))


class MomentFit(NamedTuple):
    lambdas: Tensor  # (K,) fitted coefficients
    moments: Tensor  # (K,) self-normalised IS estimate of E_P[phi] at the fit
    max_error: float  # max |moments - requested|


def fit_moments(phi: Tensor, log_weights: Tensor, moments: Tensor, *, max_iter: int = 200, tol: float = 1e-6,
                warn_above: float = 1e-3) -> MomentFit:
    """Lambda such that the importance-weighted mean of phi under w * exp(lambda . phi) is ``moments``.

    Minimises the convex dual  L(lambda) = log sum_i w_i exp(lambda . phi_i) - lambda . mu,
    whose gradient is E_{P_lambda}[phi] - mu (Newton with a line search, float64).
    ``phi``: (N, K); ``log_weights``: (N,) log a(x_i) - log q(x_i) for samples x_i ~ q.
    Warns when the requested moments are not reachable from these samples.
    """
    phi, logw, mu = phi.double(), log_weights.detach().double(), moments.detach().double().reshape(-1)
    if phi.dim() != 2 or phi.shape[0] != logw.shape[0] or phi.shape[1] != mu.shape[0]:
        raise ValueError(f"shapes: phi (N, K), log_weights (N,), moments (K,); got {tuple(phi.shape)}, "
                         f"{tuple(logw.shape)}, {tuple(mu.shape)}")
    lam = torch.zeros_like(mu)

    def dual(l: Tensor) -> Tensor:
        return torch.logsumexp(logw + phi @ l, 0) - l @ mu

    for _ in range(max_iter):
        p = torch.softmax(logw + phi @ lam, 0)  # (N,) self-normalised weights of P_lambda
        mean = p @ phi
        grad = mean - mu
        if float(grad.abs().max()) < tol:
            break
        centred = phi - mean
        hess = (centred * p[:, None]).T @ centred + 1e-9 * torch.eye(len(mu), dtype=phi.dtype)
        step = torch.linalg.solve(hess, grad)
        t, f0 = 1.0, dual(lam)
        while t > 1e-8 and float(dual(lam - t * step)) > float(f0) - 1e-4 * t * float(grad @ step):
            t *= 0.5
        lam = lam - t * step
    mean = torch.softmax(logw + phi @ lam, 0) @ phi
    err = float((mean - mu).abs().max())
    if err > warn_above:
        warnings.warn(f"moment fit stopped {err:.3g} away from the requested moments: they may lie outside "
                      "what the samples can reach (use more or better-spread samples)", stacklevel=2)
    return MomentFit(lam.float(), mean.float(), err)


class EnergyTarget:
    """P(x) proportional to a(x) * prod factors(x), all in log space.

    ``base``: callable samples -> (B,) log a(x), or ``None`` when the caller supplies
    ``base_logps`` itself (e.g. a trainer that scores samples with a frozen LM).
    """

    def __init__(self, base: Callable[[Samples], Tensor] | None = None,
                 factors: Sequence[Callable[[Samples], Tensor]] = ()) -> None:
        self.base, self.factors = base, tuple(factors)

    def __mul__(self, factor: Callable[[Samples], Tensor]) -> "EnergyTarget":
        if not callable(factor):
            raise TypeError(f"a target factor must be callable on samples, got {type(factor).__name__}")
        return EnergyTarget(self.base, self.factors + (factor,))

    def log_factors(self, samples: Samples) -> Tensor:
        """(B,) sum of the factors' log values (0 when there is none)."""
        n = len(samples)
        out = None
        for fac in self.factors:
            # one value per sample: a factor returning fewer would broadcast silently
            v = _as_vector(fac(samples), n, f"factor {type(fac).__name__}")
            out = v if out is None else out + v
        return out if out is not None else torch.zeros(n)

    def log_score(self, samples: Samples, base_logps: Tensor | None = None) -> Tensor:
        """(B,) unnormalised log P(x) = log a(x) + sum of log factors."""
        if base_logps is None:
            if self.base is None:
                raise ValueError("this target has no `base`: pass `base_logps`")
            base_logps = _as_vector(self.base(samples), None, "base")
        extra = self.log_factors(samples).to(base_logps.device)
        return base_logps.detach().float() + extra

    def with_factor(self, old: Any, new: Any) -> "EnergyTarget":
        """A copy with factor ``old`` replaced by ``new`` (e.g. a fitted DistributionalConstraint)."""
        if old not in self.factors:
            raise ValueError("`old` is not a factor of this target")
        return EnergyTarget(self.base, tuple(new if f is old else f for f in self.factors))

