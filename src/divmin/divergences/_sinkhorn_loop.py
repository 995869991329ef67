r"""The Sinkhorn iterations behind :func:`divmin.sinkhorn`: scaling form with absorption.

A log-domain Sinkhorn step costs two log-sum-exps over the (n, m) cost, i.e. an
``exp`` per entry and several full-size temporaries. Writing the potentials as
``f = f0 + eps log u`` and ``g = g0 + eps log v`` around an *absorbed* pair
``(f0, g0)`` turns the step into two matrix-vector products with the fixed kernel

.. math::

    \tilde K_{ij} = e^{(f0_i + g0_j - C_{ij})/\varepsilon}, \qquad
    u \leftarrow 1 / \tilde K (b \odot v), \qquad v \leftarrow 1 / \tilde K^\top (a \odot u),

the same iterates in exact arithmetic. Because ``f0, g0`` are close to the optimum,
``K~`` holds numbers of order one where the plan has mass (no underflow of
``exp(-C/eps)``, unlike the plain kernel); ``(u, v)`` are folded back into
``(f0, g0)`` ("absorption", Schmitzer 2019) at each epsilon level and whenever they
drift out of a safe range. A non-finite scaling (e.g. a kernel row that underflowed)
sends the level back to exact log-domain steps from the last good state. The row
marginal ``a u K~(b v)`` needed for the stopping test is the next step's product, so
checking costs no extra pass. On CPU the batch is solved in chunks whose kernel fits
in the L2 cache, each stopping on its own (the batch's ``n_iter`` is the largest).

Epsilon-scaling: ``eps`` goes from ``max|C| * _START`` down to ``epsilon`` by the factor
``scaling``; each intermediate level runs until its marginal error is below
``_LEVEL_TOL`` (at most ``_LEVEL_CAP`` steps) so the final level starts warm. One
iteration per level (the earlier schedule) left small-``epsilon`` problems 2-5% below
the exact cost after 1000 iterations; above ``max|C| / 16`` a cold start converges
as fast as annealing, and each level costs a kernel rebuild.

References
----------
* B. Schmitzer. Stabilized Sparse Scaling Algorithms for Entropy Regularized Transport
  Problems. SIAM J. Sci. Comput. 41(3), 2019.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_LEVEL_TOL = 1e-2  # intermediate epsilon levels: loose marginal error, then move on
_LEVEL_CAP = 100  # ... or this many steps
_START = 1 / 16  # annealing starts at max|C| / 16: from there a cold start is as quick
_CACHE_BYTES = 1 << 20  # CPU: bytes of K~ per chunk (with K~^T, half of a 4 MiB L2 cache)


def c_transform(pot: Tensor, log_w: Tensor, cost: Tensor, eps: Tensor) -> Tensor:
    """``-eps * LSE_j(log w_j + (pot_j - cost_ij)/eps)``; pot, log_w (B, m), cost (B, n, m), eps (B, 1)."""
    z = (pot.unsqueeze(-2) - cost) / eps.unsqueeze(-1)
    z = z.add_(log_w.unsqueeze(-2)) if not z.requires_grad else z + log_w.unsqueeze(-2)
    return -eps * torch.logsumexp(z, dim=-1)


class _Problem:
    """One chunk: weights, their logs, the cost (and its transpose view), the mask of unused pairs."""

    def __init__(self, a, b, log_a, log_b, cost, symmetric, buf: Tensor | None):
        self.a, self.b, self.log_a, self.log_b, self.cost, self.symmetric = a, b, log_a, log_b, cost, symmetric
        # K~ and its transpose, stored contiguous and reused (CPU gemv is fastest on w @ K).
        self.buf = None if buf is None else tuple(t if t is None else t[: cost.shape[0]] for t in buf)
        # Pairs with a_i = b_j = 0 carry no mass and no constraint: their exponent is
        # unbounded (it would overflow K~ and make inf * 0), so they are pinned to 0.
        za, zb = a == 0, b == 0
        self.dead = (za.unsqueeze(-1) & zb.unsqueeze(-2)) if bool(za.any() & zb.any()) else None

    def kernel(self, f: Tensor, g: Tensor, eps: Tensor) -> Tensor:
        if self.buf is None:  # autodiff: out of place
            x = (f.unsqueeze(-1) + g.unsqueeze(-2) - self.cost) / eps.unsqueeze(-1)
            K = (x if self.dead is None else x.masked_fill(self.dead, -math.inf)).exp()
            return K, K.mT
        # In place in a reused buffer: a fresh multi-MB tensor costs more (page faults) than the exp.
        # (f/eps ⊕ g/eps) - C/eps in two passes (a broadcast division is a slow third).
        inv = eps.reciprocal()
        x = torch.add((f * inv).unsqueeze(-1), (g * inv).unsqueeze(-2), out=self.buf[0])
        x = x.addcmul_(self.cost, inv.unsqueeze(-1), value=-1)
        K = (x if self.dead is None else x.masked_fill_(self.dead, -math.inf)).exp_()
        # K~^T contiguous only while it fits in cache: there a transposed gemv is 2-3x
        # slower than the copy; out of cache both are memory bound.
        return K, (self.buf[1].copy_(K.mT) if self.buf[1] is not None else K.mT)

    def log_step(self, f: Tensor, g: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """One exact log-domain Sinkhorn step (or the averaged step when symmetric)."""
        if self.symmetric:
            f = 0.5 * (f + c_transform(f, self.log_a, self.cost, eps))
            return f, f
        f = c_transform(g, self.log_b, self.cost, eps)
        return f, c_transform(f, self.log_a, self.cost.transpose(-1, -2), eps)


def _level(p: _Problem, f, g, eps, budget: int, tol: float, check_every: int, cold: bool):
    """Iterate at one epsilon for at most ``budget`` steps; returns f, g, steps, error (B,).

    ``cold``: (f, g) = 0 and no annealing, so ``exp(-C/eps)`` may underflow whole rows:
    the first step is then an exact log-domain one.
    """
    steps = 0
    if cold:
        f, g = p.log_step(f, g, eps)
        steps = 1
    it = _Scalings(p, f, g, eps)
    err = torch.full_like(f[..., 0], math.inf)
    limit = 0.25 * math.log(torch.finfo(f.dtype).max)  # |log u| beyond this: absorb
    log_mode = False
    while steps < budget:
        steps += 1
        if log_mode:
            f, g = p.log_step(f, g, eps)
        else:
            it.step()
        if steps % check_every and steps < budget:
            continue
        # One host sync per check: stop, fall back to log steps, or absorb.
        with torch.no_grad():
            if log_mode:
                row = torch.exp(p.log_a + (f - c_transform(g, p.log_b, p.cost, eps)) / eps)
                err, drift = (row - p.a).abs().sum(-1), f.new_zeros(())
            else:
                err, drift = it.error()
            state = torch.stack([err.max(), drift]).tolist()
        if not all(math.isfinite(x) for x in state):
            # K~ lost a row (underflow) or a scaling overflowed: redo with exact log steps.
            f, g, log_mode = it.f0, it.g0, True
            err = torch.full_like(err, math.inf)
            continue
        if state[0] < tol:
            break
        if not log_mode and state[1] > limit:
            it = _Scalings(p, *it.potentials(), eps)
    return (f, g, steps, err, None) if log_mode else (*it.potentials(), steps, err, it)


class _Scalings:
    """Sinkhorn in scaling form around absorbed potentials (f0, g0): vectors kept as
    (B, 1, k) rows so each half step is one division and one batched gemv.

    State: ``s = K~ (b v)`` and ``t = K~^T (a u)`` from the last products, ``u = 1/s_old``,
    ``v = 1/t``; the row marginal is ``a u s``.
    """

    def __init__(self, p: _Problem, f0: Tensor, g0: Tensor, eps: Tensor):
        self.p, self.f0, self.g0, self.eps = p, f0, g0, eps
        self.K, self.KT = p.kernel(f0, g0, eps)
        self.a, self.b = p.a.unsqueeze(-2), p.b.unsqueeze(-2)
        self.inv_u = self.inv_v = None  # 1/u and 1/v; None: u = v = 1
        self.s = torch.matmul(self.a if p.symmetric else self.b, self.KT)
        self.au = self.a

    def step(self) -> None:
        if self.p.symmetric:  # f <- (f + T(f))/2 is u <- sqrt(u / K~(a u))
            self.inv_u = self.inv_v = (self.s if self.inv_u is None else self.s * self.inv_u).sqrt()
            self.au = self.a / self.inv_u
            self.s = torch.matmul(self.au, self.KT)
            return
        self.inv_u = self.s
        self.au = self.a / self.s
        self.inv_v = torch.matmul(self.au, self.K)
        self.s = torch.matmul(self.b / self.inv_v, self.KT)

    def error(self) -> tuple[Tensor, Tensor]:
        """L1 row-marginal error (B,) and the largest ``|log u|, |log v|``."""
        err = (self.au * self.s - self.a).abs().sum(-1).squeeze(-1)
        if self.inv_u is None:
            return err, err.new_zeros(())
        return err, torch.cat([self.inv_u, self.inv_v], -1).log().abs().amax()

    def potentials(self) -> tuple[Tensor, Tensor]:
        if self.inv_u is None:
            return self.f0, self.g0
        return (self.f0 - self.eps * self.inv_u.squeeze(-2).log(),
                self.g0 - self.eps * self.inv_v.squeeze(-2).log())


def _levels(cmax: Tensor, epsilon: float, scaling: float | None) -> list[Tensor]:
    """The epsilon schedule, each level (B, 1): ``max|C|`` (per item, finite entries;
    ``cmax`` (B,)) times ``scaling^k``, floored at ``epsilon``."""
    final = cmax.new_full((cmax.shape[0], 1), epsilon)
    if scaling is None or scaling == 1:
        return [final]
    eps0 = (cmax * _START).clamp_min(epsilon).unsqueeze(-1)
    ratio = float(eps0.max()) / epsilon
    # floor: a start within one factor of ``epsilon`` is no start at all (one more kernel).
    n = math.floor(math.log(ratio) / -math.log(scaling) + 1e-9) if ratio > 1 else 0
    return [(eps0 * scaling**k).clamp_min(epsilon) for k in range(n)] + [final]


def _chunk(cost: Tensor) -> int:
    if cost.device.type != "cpu":
        return cost.shape[0]
    return max(1, _CACHE_BYTES // (cost.shape[-1] * cost.shape[-2] * cost.element_size()))


def iterate(a, b, log_a, log_b, cost, cmax, epsilon, scaling, max_iter, tol, check_every, symmetric, has_inf):
    """Sinkhorn potentials for a (B, n, m) problem: f (B, n), g (B, m), n_iter, error (B,)
    and, unless ``has_inf`` is None (the caller builds them with autograd), the outputs
    (transport, objective, plan, plan error) of :func:`_fill_plan`.

    ``error`` is the L1 error of the plan's row marginal at the last check (column
    marginals are exact after each step).
    """
    size = _chunk(cost)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (a, b, cost))
    shape = (min(size, cost.shape[0]),) + cost.shape[1:]
    fits = math.prod(shape) * cost.element_size() <= _CACHE_BYTES
    buf = None if grad else (cost.new_empty(shape), cost.new_empty(shape[:1] + shape[:0:-1]) if fits else None)
    plan = None if has_inf is None else torch.empty_like(cost)
    stats = cost.new_empty(3, cost.shape[0])
    outs = []
    for i in range(0, cost.shape[0], size):
        sl = slice(i, i + size)
        outs.append(_solve_chunk(*(t[sl] for t in (a, b, log_a, log_b, cost, cmax)), epsilon, scaling,
                                 max_iter, tol, check_every, symmetric, buf))
        if plan is not None:  # while K~ is still in cache
            _fill_plan(plan[sl], stats[:, sl], *outs[-1][:2], outs[-1][-1], a[sl], b[sl], cost[sl], epsilon, has_inf)
    f, g, n_iter, err, _ = zip(*outs)
    f, g = torch.cat(f), torch.cat(g)
    if plan is None:
        return f, g, max(n_iter), torch.cat(err), None
    objective = (f * a).sum(-1) + (g * b).sum(-1) - epsilon * (stats[1] - 1)
    return f, g, max(n_iter), torch.cat(err), (stats[0], objective, plan, stats[2])


def _solve_chunk(a, b, log_a, log_b, cost, cmax, epsilon, scaling, max_iter, tol, check_every, symmetric, buf):
    p = _Problem(a, b, log_a, log_b, cost, symmetric, buf)
    levels = _levels(cmax, epsilon, scaling)
    scaled = scaling is not None and scaling != 1  # then |C| / eps <= 1 / _START on the first level
    f, g = cost.new_zeros(cost.shape[:-1]), cost.new_zeros(cost.shape[:-2] + cost.shape[-1:])
    n_iter, it = 0, None
    for k, eps in enumerate(levels):
        last = k == len(levels) - 1
        # Every later level keeps at least one step of the budget.
        budget = max_iter - n_iter if last else min(_LEVEL_CAP, max_iter - n_iter - (len(levels) - 1 - k))
        if budget <= 0:
            continue
        f, g, steps, err, it = _level(p, f, g, eps, budget, tol if last else max(tol, _LEVEL_TOL),
                                  check_every if last else 1, cold=n_iter == 0 and len(levels) == 1 and not scaled)
        n_iter += steps
    return f, g, n_iter, err, it


def _fill_plan(P, stats, f, g, it: _Scalings | None, a, b, C, epsilon: float, has_inf: bool) -> None:
    """Write the plan into ``P`` and its transport cost, mass and marginal error
    ``max(|P 1 - a|_1, |P^T 1 - b|_1)`` into ``stats`` (3, B), without autograd.

    From the final scalings ``P = (a u) ⊙ K~ ⊙ (b v)``: two products, no ``exp``. After a
    log-domain fallback ``P = exp(((f + eps log a) ⊕ (g + eps log b) - C) / eps)``, the
    weights folded into the exponent keeping pairs with a zero weight at exactly 0.
    """
    if it is not None:
        bv = it.b if it.inv_v is None else it.b / it.inv_v
        torch.mul(it.K, it.au.mT, out=P).mul_(bv)
    else:
        fa, gb = f / epsilon + a.log(), g / epsilon + b.log()
        torch.add(fa.unsqueeze(-1), gb.unsqueeze(-2), out=P).add_(C, alpha=-1 / epsilon).exp_()
    C = C.masked_fill(torch.isinf(C), 0) if has_inf else C  # 0 * inf: forbidden pairs cost nothing
    stats[0] = (P * C).sum((-2, -1))  # cascade summation: a float32 BLAS dot of n*m terms is 40x less accurate
    rows, cols = P.sum(-1), P.sum(-2)
    stats[1] = rows.sum(-1)
    stats[2] = torch.maximum((rows - a).abs().sum(-1), (cols - b).abs().sum(-1))
