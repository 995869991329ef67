"""The f-distill generator gradient as a surrogate loss (Xu, Nie & Vahdat 2025).

Convention (DESIGN.md): P = p_sigma, the noised teacher; Q = q_sigma, the noised
one-step student; r = p_sigma / q_sigma and D_f(P || Q) = E_Q[f(r)].

Derivation. The student draws x_t = G_theta(z) + sigma * eps. Since
d/dtheta int q_theta f(p/q_theta) = int (dq_theta/dtheta) g(r) with g = f - r f',
and for a fixed function psi, int (dq_theta/dtheta) psi = E_z,eps[grad_x psi(x_t) . dx_t/dtheta]
(reparameterisation), taking psi = g(r(.)) with r frozen gives

    grad_theta D_f(p_sigma || q_sigma) = E[ grad_x g(r)(x_t) . dx_t/dtheta ],
    grad_x g(r) = g'(r) r grad_x log r = -r^2 f''(r) (s_P - s_Q) = h(r) (s_Q - s_P),

with h = r^2 f'' (the registry's ``h``) and s_P, s_Q the scores of p_sigma, q_sigma.
Reverse KL has h = 1: this is DMD / variational score distillation. The
surrogate below is ``mean_b <w_b h(r_b) (s_Q - s_P)_b, x_t,b>`` with the weight
detached, so its gradient through x_t (and on through the generator) is exactly
that estimator; tests check it against a quadrature of D_f in 1-D.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..divergences import Divergence, as_divergence
from ..divergences import check_float_tensor
from ..divergences.kernels import NonFiniteInputError

__all__ = ["check_fdistill_divergence", "fdistill_surrogate", "fdistill_weight"]

def check_fdistill_divergence(divergence: str | Divergence) -> Divergence:
    """The registry member, or ValueError when its h = r^2 f'' is unusable (missing, 0, < 0, NaN).

    The registry decides it once per member (capability ``"score_weight"``).

    >>> check_fdistill_divergence("js")
    JS()
    """
    return as_divergence(divergence).require("score_weight")


def fdistill_weight(log_ratio: Tensor, *, divergence: str | Divergence, normalize: bool = True) -> Tensor:
    """h(r) per sample in fp32 or wider, (B,); divided by its batch mean when ``normalize``.

    The normalised weights h_b / mean(h) = exp(log h_b - logmeanexp(log h)) are formed in log
    space (the registry's ``log_h``), so they stay finite where h itself overflows (forward KL
    or Pearson at log r = 100 in float32); when every h is 0 they are all 0.
    """
    div = as_divergence(divergence)
    check_float_tensor("log_ratio", log_ratio, ndim=1)
    if normalize and log_ratio.numel() == 0:
        raise ValueError("`log_ratio` is empty: a batch mean of h needs one sample")
    dtype = torch.promote_types(log_ratio.dtype, torch.float32)
    log_r = log_ratio.detach().to(dtype)
    if not normalize:
        return div.h(log_r)
    log_h = div.log_h(log_r)
    log_mean = torch.logsumexp(log_h, 0) - math.log(log_h.numel())
    if not bool(torch.isfinite(log_mean)):
        return torch.zeros_like(log_h)
    return torch.exp(log_h - log_mean)


def fdistill_surrogate(
    x_t: Tensor,
    fake_score: Tensor,
    teacher_score: Tensor,
    log_ratio: Tensor,
    *,
    divergence: str | Divergence,
    normalize: bool = True,
    time_weight: Tensor | None = None,
) -> Tensor:
    """A scalar whose gradient w.r.t. ``x_t`` is the f-distill generator gradient.

    d(surrogate)/d x_t[b] = w_b h(r_b) (fake_score[b] - teacher_score[b]) / B, so
    backpropagating it through x_t = G_theta(z) + sigma eps gives the Monte-Carlo
    estimate of grad_theta E_sigma[w(sigma) D_f(p_sigma || q_sigma)] (module docstring).

    Args:
        x_t: (B, *shape) noised student samples, attached to the generator's graph.
        fake_score: (B, *shape) score of the noised student (the model Q) at x_t (s_Q),
            e.g. the fake score network fitted to the student's samples.
        teacher_score: (B, *shape) score of the noised teacher (the target P) at x_t (s_P).
        log_ratio: (B,) estimates of log r = log p_sigma(x_t) - log q_sigma(x_t).
        divergence: registry name or member; must have a usable h (see
            :func:`check_fdistill_divergence`: total variation is refused).
        normalize: divide h by its (detached) batch mean, the DMD / FastGen
            normaliser; False gives the unnormalised (unbiased) gradient.
        time_weight: optional (B,) weights w(sigma_b) >= 0, e.g. sigma^2 to turn
            score differences into denoiser differences.

    Returns: a 0-d tensor in x_t's dtype (its value has no meaning; only its gradient).

    As everywhere in divmin the model (fake score) comes before the target (teacher score).

    >>> x = torch.zeros(2, 3, requires_grad=True)
    >>> s_q, s_p = torch.ones(2, 3), torch.zeros(2, 3)
    >>> fdistill_surrogate(x, s_q, s_p, torch.zeros(2), divergence="reverse_kl").backward()
    >>> x.grad  # h = 1 for reverse KL (DMD): (s_Q - s_P) / B
    tensor([[0.5000, 0.5000, 0.5000],
            [0.5000, 0.5000, 0.5000]])
    """
    div = check_fdistill_divergence(divergence)
    if not isinstance(x_t, Tensor) or x_t.ndim < 1:
        raise TypeError("`x_t` must be a tensor of shape (B, ...)")
    for name, t in (("fake_score", fake_score), ("teacher_score", teacher_score)):
        if not isinstance(t, Tensor) or t.shape != x_t.shape:
            raise ValueError(f"`{name}` must be a tensor of x_t's shape {tuple(x_t.shape)}")
    b = x_t.shape[0]
    if b == 0:
        raise ValueError("`x_t` holds no sample (batch size 0)")
    if not isinstance(log_ratio, Tensor) or log_ratio.shape != (b,):
        raise ValueError(f"`log_ratio` must be a tensor of shape ({b},)")
    if not bool(torch.isfinite(log_ratio).all()):
        raise NonFiniteInputError("`log_ratio` must be finite (both noised densities are positive everywhere)")
    w = fdistill_weight(log_ratio, divergence=div, normalize=normalize)
    if time_weight is not None:
        if not isinstance(time_weight, Tensor) or time_weight.shape != (b,):
            raise ValueError(f"`time_weight` must be a tensor of shape ({b},)")
        if not bool(torch.isfinite(time_weight).all() & (time_weight >= 0).all()):
            raise ValueError("`time_weight` must be finite and >= 0 (a weight w(sigma) of the loss over noise levels)")
        w = w * time_weight.detach().to(w.dtype)
    if not bool(torch.isfinite(x_t.detach()).all()):
        raise NonFiniteInputError("`x_t` must be finite (a NaN/inf noised sample: check the generator)")
    diff = (fake_score.detach() - teacher_score.detach()).to(w.dtype)
    if not bool(torch.isfinite(diff).all()):
        raise NonFiniteInputError("`fake_score` and `teacher_score` must be finite (a NaN/inf score: check the score networks)")
    direction = w.reshape(-1, *([1] * (x_t.ndim - 1))) * diff
    return (direction * x_t.to(w.dtype)).flatten(1).sum(1).mean().to(x_t.dtype)
