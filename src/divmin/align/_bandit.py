"""Exact tabular preference problems for f-DPO: closed-form optima, population loss, metrics.

A *bandit* here is one prompt with K responses: a reference policy ``pi_ref``
(the target P of DESIGN.md), a hidden true reward R, and Bradley-Terry
preferences ``Pr(y_i > y_j) = sigmoid(R_i - R_j)``. The policy is the model Q,
so ``r_y = pi_ref_y / pi_y``.

Closed-form optimum. f-DPO solves ``max_pi E_pi[R] - beta D_f(pi_ref || pi)``
with ``D_f(pi_ref || pi) = sum_y pi_y f(pi_ref_y / pi_y)``. Since
``d/dpi [pi f(ref / pi)] = f(r) - r f'(r) = g(r)``, the Lagrangian's
stationarity condition with multiplier lambda for ``sum_y pi_y = 1`` is

    R_y - beta g(r_y) - lambda = 0   =>   pi_y = pi_ref_y / g^{-1}((R_y - lambda) / beta).

The objective is concave (``pi f(ref / pi)`` is the perspective of a convex
function), so this stationary point is the maximum. For an admissible member
(:func:`~divmin.align.fdpo_admissible`) g is strictly decreasing in r and
tends to -inf as r -> inf, so every reward has a preimage, ``sum_y pi_y`` is
strictly decreasing in lambda, and lambda is the unique root of
``sum_y pi_y(lambda) = 1``. Both inversions are done by bisection in float64:
g^{-1} on ``log r`` (vectorised over responses), lambda by repeated grid
refinement of a bracket.

At the optimum the f-DPO implicit reward ``beta g(r_y)`` equals ``R_y - lambda``,
so the implied preference probabilities are exactly the true ones: the
population f-DPO loss (:func:`population_fdpo_loss`) is minimised there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import vmap

from ..divergences import Divergence, as_divergence
from ..eval import calibration_error
from ._fdpo import fdpo_loss

__all__ = [
    "bandit_metrics",
    "fdpo_optimum",
    "implied_rewards",
    "optimum_sample_size",
    "pair_fisher",
    "pair_weights",
    "population_fdpo_loss",
]

F64 = torch.float64
_LOG_R_SPAN = 745.0  # pi_ref * exp(-745) underflows to 0 in float64: no larger log r is needed


def _admissible(divergence: "str | Divergence") -> Divergence:
    return as_divergence(divergence).require("implicit_reward")


def _check_problem(ref_probs: Tensor, reward: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    if ref_probs.ndim != 1 or reward.shape != ref_probs.shape or ref_probs.numel() < 2:
        raise ValueError(f"`ref_probs` and `reward` must be (K,) with K >= 2, got "
                         f"{tuple(ref_probs.shape)} and {tuple(reward.shape)}")
    ref = ref_probs.detach().to(F64)
    if not bool((ref > 0).all()) or abs(float(ref.sum()) - 1.0) > 1e-6:
        raise ValueError("`ref_probs` must be a full-support distribution (positive, summing to 1)")
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"`beta` must be a finite number > 0, got {beta!r}")
    return ref / ref.sum(), reward.detach().to(F64)


def _invert_g(div: Divergence, target: Tensor, lo: Tensor, hi: Tensor, iters: int = 64) -> Tensor:
    """Elementwise ``log r`` in ``[lo, hi]`` with ``g(r) = target``; g decreasing, so clipped at the ends.

    Bisection keeps ``g(lo) >= target >= g(hi)``; 64 halvings of a width <= 750
    reach float64 resolution.
    """
    lo, hi = torch.broadcast_tensors(lo, hi)
    lo, hi = lo.clone(), hi.clone()
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        above = div.g(mid) > target  # g(mid) still above the target: r must grow
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    return 0.5 * (lo + hi)


def _log_r_at(div: Divergence, lam: Tensor, log_ref: Tensor, reward: Tensor, beta: float) -> Tensor:
    """``log r_y(lambda)`` for a batch of lambdas: (L,) -> (L, K), with pi_y = pi_ref_y / r_y <= 1."""
    target = (reward - lam[:, None]) / beta
    return _invert_g(div, target, log_ref.expand_as(target), (log_ref + _LOG_R_SPAN).expand_as(target))


def fdpo_optimum(ref_probs: Tensor, reward: Tensor, *, divergence: "str | Divergence", beta: float,
                 rounds: int = 11, grid: int = 32) -> Tensor:
    """The policy maximising ``E_pi[R] - beta D_f(pi_ref || pi)``, as (K,) float64 probabilities.

    Solves ``g(pi_ref_y / pi_y) = (R_y - lambda) / beta`` with ``sum_y pi_y = 1``
    (module docstring). lambda is bracketed by

    * ``lambda_lo = max_y [R_y - beta g(pi_ref_y)]``: there ``r_y = pi_ref_y``,
      i.e. ``pi_y = 1``, for the maximising y, so ``sum pi >= 1``;
    * ``lambda_hi = max_y [R_y - beta g(K pi_ref_y)]``: there every ``pi_y <= 1/K``,
      so ``sum pi <= 1``;

    and the bracket is shrunk ``rounds`` times by evaluating ``sum pi`` on ``grid``
    points at once. The result is renormalised (a change of order 1e-15).
    Reverse KL gives ``pi_ref exp(R / beta) / Z``; forward KL
    ``pi_ref beta / (lambda - R)``.
    """
    div = _admissible(divergence)
    ref, reward = _check_problem(ref_probs, reward, beta)
    log_ref = ref.log()
    k = ref.numel()
    lam_lo = (reward - beta * div.g(log_ref)).max()
    lam_hi = (reward - beta * div.g(log_ref + math.log(k))).max()
    for _ in range(rounds):
        lams = torch.linspace(float(lam_lo), float(lam_hi), grid, dtype=F64)
        mass = torch.exp(log_ref - _log_r_at(div, lams, log_ref, reward, beta)).sum(-1)
        n_over = int((mass >= 1.0).sum())  # mass decreases with lambda: the first n_over points are >= 1
        i = min(max(n_over - 1, 0), grid - 2)
        lam_lo, lam_hi = lams[i], lams[i + 1]
    lam = 0.5 * (lam_lo + lam_hi)
    pi = torch.exp(log_ref - _log_r_at(div, lam[None], log_ref, reward, beta)[0])
    return pi / pi.sum()


def implied_rewards(policy_logp: Tensor, ref_logp: Tensor, *, divergence: "str | Divergence", beta: float) -> Tensor:
    """The f-DPO implicit reward ``beta g(pi_ref / pi)`` of every response (up to the constant lambda)."""
    return beta * as_divergence(divergence).g(ref_logp.to(F64) - policy_logp.to(F64))


def pair_fisher(policy_logp: Tensor, ref_logp: Tensor, chosen: Tensor, rejected: Tensor, *,
                divergence: "str | Divergence", beta: float, weights: Tensor | None = None) -> Tensor:
    """Fisher information of a tabular policy's logits under the f-DPO preference model, from a batch of pairs.

    f-DPO models ``Pr(c > r) = sigmoid(m)`` with margin ``m = u_c - u_r`` and implicit
    reward ``u_y = beta g(pi_ref_y / pi_y)``; for logits theta (``pi = softmax(theta)``)
    ``du / dtheta = J = diag(D) (I - 1 pi^T)`` with ``D_y = -beta g'(log r_y)`` (g taken
    as a function of ``log r``). The expected Hessian of the loss over labels drawn from
    the model is

        F = J^T L J,    L = sum_p w_p sigmoid(m_p) sigmoid(-m_p) (e_c - e_r)(e_c - e_r)^T,

with pair weights ``w`` (``weights``, default ``1 / P`` each)
    a Gauss-Newton matrix: at the optimum, where the model's preferences are the true
    ones, it is the Hessian of :func:`population_fdpo_loss` (with pairs drawn as the data
    are). ``D`` is what makes f-DPO hard to train in logits: for members whose g stays
    bounded as ``r -> 0`` (forward KL: ``g = -r``, ``D = beta r``) the implicit reward of
    a response with ``pi >> pi_ref`` hardly moves with its logit, so plain gradients
    vanish there; a step ``F^{-1} grad`` undoes that scale for every member.

    Shapes: ``policy_logp`` (..., K) normalised log-probabilities (a leading batch of
    policies is allowed), ``ref_logp`` (K,), ``chosen`` and ``rejected`` (P,) indices;
    ``weights`` (P,) if given; returns (..., K, K) in float64.
    """
    div = _admissible(divergence)
    logp = policy_logp.detach().to(F64)
    k = logp.shape[-1]
    if ref_logp.shape != (k,) or chosen.ndim != 1 or chosen.shape != rejected.shape or chosen.numel() == 0:
        raise ValueError(f"`ref_logp` must be (K,) = ({k},) and `chosen`/`rejected` equal non-empty (P,), got "
                         f"{tuple(ref_logp.shape)}, {tuple(chosen.shape)}, {tuple(rejected.shape)}")
    log_r = (ref_logp.detach().to(logp) - logp).requires_grad_(True)
    with torch.enable_grad():
        g = div.g(log_r)
        (dg,) = torch.autograd.grad(g.sum(), log_r)
    u, d = beta * g.detach(), -beta * dg  # (..., K)
    m = u[..., chosen] - u[..., rejected]
    w = torch.sigmoid(m) * torch.sigmoid(-m)  # (..., P)
    w = w / chosen.numel() if weights is None else w * weights.to(w)
    lap = torch.zeros(*logp.shape[:-1], k * k, dtype=F64, device=logp.device)
    for a, b, sign in ((chosen, chosen, 1.0), (rejected, rejected, 1.0), (chosen, rejected, -1.0),
                       (rejected, chosen, -1.0)):
        lap.index_add_(-1, a * k + b, sign * w)
    lap = lap.view(*logp.shape[:-1], k, k)
    pi = logp.exp()
    jac = torch.diag_embed(d) - d[..., :, None] * pi[..., None, :]  # J = diag(D) - D pi^T
    return jac.transpose(-1, -2) @ lap @ jac


def optimum_sample_size(ref_probs: Tensor, reward: Tensor, *, divergence: "str | Divergence", beta: float,
                        tv: float, optimum: Tensor | None = None) -> float:
    """Labelled pairs (drawn as the data are, :func:`pair_weights`) after which the best estimator of the
    policy is expected to lie within total variation ``tv`` of the optimum: a Cramer-Rao figure.

    At the optimum the f-DPO preference model is the true one, so the per-pair Fisher
    information of the logits is the population :func:`pair_fisher` F, and an efficient
    estimator from N pairs has ``Cov(theta) ~ F^+ / N``. With ``C = A F^+ A``,
    ``A = diag(pi) - pi pi^T`` (the softmax Jacobian), ``E TV ~ sqrt(2 / pi) / 2 * sum_y sqrt(C_yy) / sqrt(N)``;
    the answer solves ``E TV = tv``. A local (asymptotic) figure: it says nothing of how hard the
    loss is to optimise on the way there.
    """
    if not (isinstance(tv, (int, float)) and tv > 0):
        raise ValueError(f"`tv` must be a number > 0, got {tv!r}")
    ref, reward = _check_problem(ref_probs, reward, beta)
    pi = fdpo_optimum(ref, reward, divergence=divergence, beta=beta) if optimum is None else optimum.to(F64)
    k = ref.numel()
    i, j = torch.nonzero(~torch.eye(k, dtype=torch.bool), as_tuple=True)
    fisher = pair_fisher(pi.log(), ref.log(), i, j, divergence=divergence, beta=beta, weights=pair_weights(ref)[i, j])
    jac = torch.diag(pi) - torch.outer(pi, pi)
    cov = jac @ torch.linalg.pinv(fisher, hermitian=True, rtol=1e-13) @ jac
    spread = 0.5 * math.sqrt(2.0 / math.pi) * float(cov.diagonal().clamp_min(0).sqrt().sum())
    return (spread / tv) ** 2


def pair_weights(ref_probs: Tensor) -> Tensor:
    """(K, K) probabilities of presenting the ordered pair (i, j): ``pi_ref_i pi_ref_j`` over i != j, normalised."""
    ref = ref_probs.to(F64)
    w = ref[:, None] * ref[None, :]
    w = w * (1.0 - torch.eye(ref.numel(), dtype=F64))
    return w / w.sum()


def bandit_metrics(policy_probs: Tensor, ref_probs: Tensor, reward: Tensor, *, divergence: "str | Divergence",
                   beta: float, optimum: Tensor | None = None) -> dict[str, float]:
    """Exact metrics of a tabular policy pi on a bandit.

    * ``reward``: E_pi[R]; ``entropy``: -sum pi log pi (nats);
    * ``kl``: KL(pi || pi_ref) = sum pi log(pi / pi_ref);
    * ``ece``: :func:`divmin.eval.calibration_error` of the implied preferences
      ``sigmoid(beta (g(r_i) - g(r_j)))`` against ``sigmoid(R_i - R_j)`` over
      ordered pairs i != j weighted by ``pi_ref_i pi_ref_j`` (10 bins);
    * ``tv_to_optimum``: ``sum |pi - pi*| / 2`` with pi* = :func:`fdpo_optimum`
      (computed unless ``optimum`` is given).
    """
    pi, ref, reward = policy_probs.detach().to(F64), ref_probs.detach().to(F64), reward.detach().to(F64)
    logpi, logref = pi.log(), ref.log()
    if optimum is None:
        optimum = fdpo_optimum(ref, reward, divergence=divergence, beta=beta)
    implied = implied_rewards(logpi, logref, divergence=divergence, beta=beta)
    pred = torch.sigmoid(implied[:, None] - implied[None, :])
    true = torch.sigmoid(reward[:, None] - reward[None, :])
    return {
        "reward": float((pi * reward).sum()),
        "entropy": float(-torch.special.xlogy(pi, pi).sum()),
        "kl": float((torch.special.xlogy(pi, pi) - pi * logref).sum()),
        "ece": float(calibration_error(pred, true, weight=pair_weights(ref))),
        "tv_to_optimum": float(0.5 * (pi - optimum.to(F64)).abs().sum()),
    }


def population_fdpo_loss(logits: Tensor, ref_logp: Tensor, true_reward: Tensor, *,
                         divergence: "str | Divergence", beta: float) -> Tensor:
    """The exact expectation of :func:`fdpo_loss` over Bradley-Terry preference data on a bandit.

    Data: an ordered pair (i, j), i != j, is presented with probability
    ``q_ij ∝ pi_ref_i pi_ref_j``, then labelled ``y_i > y_j`` with probability
    ``s_ij = sigmoid(R_i - R_j)``. With ``l(c, r)`` the loss of chosen c over
    rejected r,

        E[loss] = sum_{i != j} q_ij (s_ij l(i, j) + s_ji l(j, i)) = sum_{i != j} 2 q_ij s_ij l(i, j),

    using ``q`` symmetric. Each ``l(i, j)`` is the library's ``fdpo_loss`` on a
    one-pair batch (vectorised with ``torch.func.vmap``), so this tests that loss.
    """
    logp = F.log_softmax(logits, dim=-1)
    k = logp.numel()
    i, j = torch.nonzero(~torch.eye(k, dtype=torch.bool, device=logp.device), as_tuple=True)
    q = pair_weights(ref_logp.detach().exp())[i, j].to(logp)
    s = torch.sigmoid(true_reward[i] - true_reward[j]).to(logp)
    div = _admissible(divergence)

    def one(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor) -> Tensor:
        return fdpo_loss(pc, pr, rc, rr, divergence=div, beta=beta).loss

    per_pair = vmap(one)(logp[i, None], logp[j, None], ref_logp[i, None].to(logp), ref_logp[j, None].to(logp))
    return (2.0 * q * s * per_pair).sum()
