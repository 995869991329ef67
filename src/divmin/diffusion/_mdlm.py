"""Masked diffusion language models (MDLM): SUBS parameterisation, continuous-time ELBO, ancestral sampler.

Forward process (absorbing, log-linear schedule alpha_t = 1 - t): each token of x_0
(B, L) is independently replaced by the mask token m = V with probability 1 - alpha_t = t.

SUBS parameterisation of the denoiser x_theta(z_t, t) (B, L, V + 1): the mask token gets
probability 0 (logit -inf), and a position that is not masked in z_t copies its token
(probability 1), so only masked positions are predicted.

Continuous-time negative ELBO (Rao-Blackwellised: the expectation over the forward
process' posterior is taken in closed form), with alpha'_t / (1 - alpha_t) = -1/t:

    NELBO(x_0) = E_{t ~ U(0, 1)} E_{z_t ~ q(.|x_0)} [ (1/t) sum_{l : z_t^l = m} -log x_theta(z_t, t)[l, x_0^l] ],

an upper bound on -log p_theta(x_0), tight when x_theta is the data's exact posterior.

Ancestral sampling from t to s < t: a masked position becomes token v with probability
((t - s)/t) x_theta[v] and stays masked with probability s/t; unmasked positions stay.
The draw is a Gumbel-max in float64 (float32 Gumbel noise lowers the entropy of the
samples and flatters their perplexity, as noted by Zheng et al. for MDLM's sampler).
With NFEs = n the times are 1, (n-1)/n, ..., 0 (or any decreasing grid from 1 to 0); when a step unmasks nothing, z is
unchanged and the denoiser's output is reused (no network call: exact for a
time-independent denoiser, MDLM's caching otherwise).

References: Sahoo et al., "Simple and Effective Masked Diffusion Language Models" (2024);
Zheng et al., "Ultra-Fast Language Generation via Discrete Diffusion Divergence Instruct" (2025).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from ..data import check_token_ids
from ..divergences import check_real
from ._mdlm_checks import (check_grid, check_ids, check_int, check_log_probs3, check_mask_id, check_masked_rows,
                           check_nfe, check_step_times, check_times)

__all__ = ["MDLMSample", "MaskedDiffusionLM", "mdlm_loss", "mdlm_reverse_step", "mdlm_sample", "sample_times", "subs_log_probs"]

Denoiser = Callable[[Tensor, Tensor], Tensor]  # (z_t (B, L), t (B,)) -> SUBS log-probs (B, L, V + 1)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
          dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniforms drawn on the generator's device (reproducible), moved to ``device``."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where, dtype=dtype).to(device)


def subs_log_probs(logits: Tensor, z_t: Tensor, *, mask_id: int) -> Tensor:
    """SUBS: (B, L, V + 1) logits, (B, L) ids -> (B, L, V + 1) float32 log-probabilities.

    The mask column is -inf; a position whose z_t is not the mask has log-prob 0 on its token.

    >>> lp = subs_log_probs(torch.zeros(1, 2, 3), torch.tensor([[2, 1]]), mask_id=2)
    >>> lp.exp()
    tensor([[[0.5000, 0.5000, 0.0000],
             [0.0000, 1.0000, 0.0000]]])
    """
    mask_id = check_mask_id(mask_id)
    z_t = check_ids("z_t", z_t, mask_id, with_mask=True)
    check_log_probs3("logits", logits, tuple(z_t.shape), mask_id)
    logits = logits.float().clone()
    logits[..., mask_id] = -math.inf
    log_p = torch.log_softmax(logits, dim=-1)
    copy = torch.full_like(log_p, -math.inf).scatter_(-1, z_t.unsqueeze(-1), 0.0)
    return torch.where((z_t == mask_id).unsqueeze(-1), log_p, copy)


def mdlm_loss(log_probs: Tensor, x0: Tensor, z_t: Tensor, t: Tensor, *, mask_id: int) -> Tensor:
    """(B,) per-sequence MDLM loss (1/t) sum_{l masked in z_t} -log_probs[l, x0_l] (nats).

    Its mean over t ~ U(0, 1) and z_t ~ q(z_t | x0) is the continuous-time NELBO.
    log_probs (B, L, V + 1) (SUBS), x0 (B, L) data ids in [0, V), z_t (B, L) equal to x0 where not
    masked, t (B,) in [0, 1]; accumulated in float32+.

    A sequence with no masked position scores exactly 0 at any t (an empty sum: nothing is
    predicted, so nothing is lost; at t = 0 the forward process masks nothing, so 0 is also the
    t -> 0 limit of the weighted sum). A masked position at t = 0 is refused: it has probability 0
    under the forward process and weight 1/t = inf.

    >>> lp = torch.log(torch.tensor([[[0.5, 0.5, 0.0]]]))
    >>> mdlm_loss(lp, torch.tensor([[0]]), torch.tensor([[2]]), torch.tensor([0.5]), mask_id=2)
    tensor([1.3863])
    >>> mdlm_loss(lp, torch.tensor([[0]]), torch.tensor([[0]]), torch.tensor([0.0]), mask_id=2)  # nothing masked
    tensor([0.])
    """
    mask_id = check_mask_id(mask_id)
    x0 = check_ids("x0", x0, mask_id, with_mask=False)
    z_t = check_ids("z_t", z_t, mask_id, with_mask=True, shape=tuple(x0.shape))
    check_log_probs3("log_probs", log_probs, tuple(x0.shape), mask_id)
    t = check_times("t", t, x0.shape[0])
    masked = z_t == mask_id
    if bool(((z_t != x0) & ~masked).any()):
        raise ValueError("`z_t` must equal `x0` wherever it is not masked (z_t is x0 with some tokens masked)")
    any_masked = masked.any(-1)
    if bool((any_masked & (t == 0)).any()):
        raise ValueError("`t` is 0 for a sequence with masked positions: the forward process masks nothing at t = 0")
    nll = -log_probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)  # (B, L)
    nll = torch.where(masked, nll.to(torch.promote_types(nll.dtype, torch.float32)), 0.0)
    # rows with nothing masked divide their 0 by 1, not by a t that may be 0
    return nll.sum(-1) / torch.where(any_masked, t.to(nll.dtype), 1.0)


def mdlm_reverse_step(log_probs: Tensor, z_t: Tensor, t: float, s: float, *, mask_id: int,
                      generator: torch.Generator | None = None) -> Tensor:
    """One ancestral step z_t -> z_s (0 <= s < t <= 1) with float64 Gumbel-max; returns (B, L) ids.

    >>> lp = torch.log(torch.tensor([[[0.0, 1.0, 0.0]]]))
    >>> mdlm_reverse_step(lp, torch.tensor([[2]]), 1.0, 0.0, mask_id=2)
    tensor([[1]])
    """
    t, s = check_step_times(t, s)
    mask_id = check_mask_id(mask_id)
    z_t = check_ids("z_t", z_t, mask_id, with_mask=True)
    check_log_probs3("log_probs", log_probs, tuple(z_t.shape), mask_id)
    check_masked_rows("log_probs", log_probs, z_t, mask_id)
    log_q = log_probs.double() + math.log((t - s) / t)
    log_q[..., mask_id] = math.log(s / t) if s > 0 else -math.inf
    u = _rand(tuple(log_q.shape), generator, log_q.device, torch.float64)
    gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float64).tiny)))
    draw = (log_q + gumbel).argmax(-1)
    return torch.where(z_t == mask_id, draw, z_t)


class MDLMSample(NamedTuple):
    """What :func:`mdlm_sample` returns."""

    tokens: Tensor  # (n, length) final ids
    calls: int  # network evaluations made (<= steps with the cache)
    path: tuple[tuple[float, Tensor], ...]  # (s, z_s) after every step when keep_path, else ()


def _time_grid(nfe: int | None, times: Sequence[float] | Tensor | None) -> list[float]:
    """The decreasing times 1 = t_0 > ... > t_K = 0 of the sampler."""
    if (nfe is None) == (times is None):
        raise ValueError("give exactly one of `nfe` and `times`")
    if times is None:
        nfe = check_nfe(nfe)
        return [i / nfe for i in range(nfe, -1, -1)]
    return check_grid(times)


def mdlm_sample(denoiser: Denoiser, n: int, length: int, *, mask_id: int, nfe: int | None = None,
                times: Sequence[float] | Tensor | None = None, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", cache: bool = True, keep_path: bool = False) -> MDLMSample:
    """Ancestral sampling from all-mask, on the uniform grid of ``nfe`` steps or on ``times`` (1, ..., 0).

    ``denoiser(z_t (n, length), t (n,))`` gives SUBS log-probs (n, length, mask_id + 1).
    ``cache``: reuse the last output when the previous step unmasked nothing. ``keep_path``:
    also return every intermediate state (e.g. DiDi-Instruct's 2-step paths 1 -> tau -> 0).

    >>> uniform = lambda z, t: subs_log_probs(torch.zeros(*z.shape, 4), z, mask_id=3)
    >>> out = mdlm_sample(uniform, 2, 5, mask_id=3, nfe=4, generator=torch.Generator().manual_seed(0))
    >>> out.tokens.shape, bool((out.tokens < 3).all()), 1 <= out.calls <= 4
    (torch.Size([2, 5]), True, True)
    """
    grid = _time_grid(nfe, times)
    n, length, mask_id = check_int("n", n, ge=1), check_int("length", length, ge=1), check_mask_id(mask_id)
    if not callable(denoiser):
        raise TypeError(f"`denoiser` must be callable (z_t, t) -> log-probs, got {type(denoiser).__name__}")
    z = torch.full((n, length), mask_id, dtype=torch.long, device=device)
    log_probs, calls, path = None, 0, []
    for t, s in zip(grid, grid[1:]):
        if log_probs is None:
            log_probs, calls = denoiser(z, torch.full((n,), t, device=z.device)), calls + 1
            _check_denoised(log_probs, z, mask_id)
        z_next = mdlm_reverse_step(log_probs, z, t, s, mask_id=mask_id, generator=generator)
        if not cache or not torch.equal(z_next, z):
            log_probs = None
        z = z_next
        if keep_path:
            path.append((s, z))
    return MDLMSample(z, calls, tuple(path))


def _check_denoised(log_probs: object, z: Tensor, mask_id: int) -> None:
    """The denoiser's output, named as such (a NaN network must stop the sampler, not yield tokens)."""
    try:
        check_log_probs3("log_probs", log_probs, tuple(z.shape), mask_id)
        check_masked_rows("log_probs", log_probs, z, mask_id)
    except (TypeError, ValueError) as err:
        raise type(err)(f"`denoiser` returned bad output: {err}") from None


class MaskedDiffusionLM(nn.Module):
    """An MDLM around a network ``net(z_t (B, L'), t (B,)) -> logits (B, L', V + 1)`` (e.g. MDLMTransformer).

    ``forward(z_t, t)`` returns SUBS log-probs; ``loss(x0)`` the per-sequence NELBO estimate;
    ``sample(n, nfe=...)`` ancestral samples. The mask token is id ``vocab_size``; sequences
    may be shorter than ``length`` (the longest the network takes).

    >>> from divmin.diffusion import MDLMTransformer
    >>> lm = MaskedDiffusionLM(MDLMTransformer(4, 6, width=16, depth=1, heads=2), 4, 6)
    >>> lm.sample(3, nfe=2, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 6])
    """

    def __init__(self, net: nn.Module, vocab_size: int, length: int) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"`net` must be an nn.Module, got {type(net).__name__}")
        for name, value in (("vocab_size", vocab_size), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")
        self.net, self.vocab_size, self.length, self.mask_id = net, vocab_size, length, vocab_size

    def forward(self, z_t: Tensor, t: Tensor) -> Tensor:
        """(B, L') ids in [0, V] (V = mask), (B,) times -> (B, L', V + 1) SUBS log-probs."""
        z_t = check_token_ids(z_t, "z_t", vocab_size=self.vocab_size + 1, length=self.length, exact_length=False)
        t = check_times("t", t, z_t.shape[0])
        return subs_log_probs(self.net(z_t, t), z_t, mask_id=self.mask_id)

    def noise(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z_t: each token of x0 (B, L') masked independently with probability t (B,)."""
        x0 = check_token_ids(x0, "x0", vocab_size=self.vocab_size, length=self.length, exact_length=False)
        t = check_times("t", t, x0.shape[0])
        masked = _rand(tuple(x0.shape), generator, x0.device) < t[:, None]
        return torch.where(masked, self.mask_id, x0)

    def loss(self, x0: Tensor, *, generator: torch.Generator | None = None, t_min: float = 1e-3,
             antithetic: bool = True) -> Tensor:
        """(B,) one-sample NELBO estimate per sequence of x0 (B, L'), in nats (divide by L' per token).

        t = t_min + (1 - t_min) u with u stratified over the batch (``antithetic``: u_i = (u_0 + i/B) mod 1).
        """
        x0 = check_token_ids(x0, "x0", vocab_size=self.vocab_size, length=self.length, exact_length=False)
        t = sample_times(x0.shape[0], generator=generator, device=x0.device, t_min=t_min, antithetic=antithetic)
        z_t = self.noise(x0, t, generator)
        return mdlm_loss(self(z_t, t), x0, z_t, t, mask_id=self.mask_id)

    @torch.no_grad()
    def sample(self, n: int, *, nfe: int | None = None, times: Sequence[float] | Tensor | None = None,
               generator: torch.Generator | None = None, length: int | None = None, cache: bool = True) -> Tensor:
        """(n, length) ancestral samples with ``nfe`` uniform steps or on ``times``, on the model's device."""
        length = self.length if length is None else length
        if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= self.length:
            raise ValueError(f"`length` must be an int in [1, {self.length}] (the model's), got {length!r}")
        param = next(self.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        return mdlm_sample(self, n, length, mask_id=self.mask_id, nfe=nfe, times=times, generator=generator,
                           device=device, cache=cache).tokens


def sample_times(n: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                 t_min: float = 1e-3, antithetic: bool = True) -> Tensor:
    """(n,) diffusion times in [t_min, 1): uniform, or stratified (u_i = (u_0 + i/n) mod 1).

    >>> sample_times(4, generator=torch.Generator().manual_seed(0), t_min=0.0).sort().values.diff().round(decimals=4)
    tensor([0.2500, 0.2500, 0.2500])
    """
    n = check_int("n", n, ge=0)
    t_min = check_real("t_min", t_min, ge=0.0)
    if not t_min < 1.0:
        raise ValueError(f"`t_min` must be in [0, 1), got {t_min}")
    if antithetic:
        u = (_rand((1,), generator, torch.device(device)) + torch.arange(n, device=device) / n) % 1.0
    else:
        u = _rand((n,), generator, torch.device(device))
    return t_min + (1.0 - t_min) * u
