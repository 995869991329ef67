"""Metrics of generated token sequences: exact generative perplexity under a known language, unigram entropy.

With a judge whose likelihood is exact (e.g. :class:`divmin.data.MarkovLanguage`),

    gen_ppl = exp( -(1 / (N L)) sum_n log p_judge(x_n) ),

the perplexity the true language assigns to the samples x_1..x_N (lower = more
likely text; a model that repeats one likely sequence scores low too, so it is
reported beside the unigram entropy of the samples' tokens,

    H_1 = -sum_v f_v log f_v,   f_v = frequency of token v over all samples' positions,

which collapses when the samples lose diversity; ``per_sequence=True`` averages each
sample's own H_1 instead, which also drops when a sample repeats itself). The paper DiDi-Instruct
(Zheng et al. 2025) reports both, with GPT-2 Large as judge.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

__all__ = ["generative_perplexity", "unigram_entropy"]


class _Judge(Protocol):
    def log_prob(self, seqs: Tensor) -> Tensor: ...


def _check_samples(samples: object, name: str = "samples") -> Tensor:
    if not isinstance(samples, Tensor):
        raise TypeError(f"`{name}` must be a tensor of token ids, got {type(samples).__name__}")
    if samples.dtype.is_floating_point or samples.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold integer token ids, got dtype {samples.dtype}")
    if samples.dim() != 2 or samples.numel() == 0:
        raise ValueError(f"`{name}` must be a non-empty (N, L) tensor, got shape {tuple(samples.shape)}")
    return samples.long()


def generative_perplexity(samples: Tensor, judge: _Judge) -> float:
    """exp(mean negative log-likelihood per token) of ``samples`` (N, L) under ``judge``.

    ``judge.log_prob(samples)`` must return the (N,) log-probabilities of whole sequences
    (a :class:`~divmin.data.MarkovLanguage` gives them exactly); accumulated in float64.

    >>> from divmin.data import MarkovLanguage
    >>> lang = MarkovLanguage(8, 6, sharpness=0.0)  # uniform: perplexity = V
    >>> round(generative_perplexity(torch.zeros(3, 6, dtype=torch.long), lang), 6)
    8.0
    """
    samples = _check_samples(samples)
    if not callable(getattr(judge, "log_prob", None)):
        raise TypeError(f"`judge` must have a `log_prob(samples)` method, got {type(judge).__name__}")
    log_p = judge.log_prob(samples)
    if not isinstance(log_p, Tensor) or log_p.shape != samples.shape[:1] or log_p.is_complex():
        raise ValueError("`judge`: log_prob(samples) must return an (N,) tensor of sequence log-probabilities")
    if bool(log_p.isnan().any() | (log_p > 0).any()):
        raise ValueError("`judge`: log_prob(samples) returned NaN or a log-probability > 0")
    # -inf (a sample the judge rules out) gives +inf, as exp of a huge mean NLL does
    return float(torch.exp(-log_p.double().sum() / samples.numel()))


def unigram_entropy(samples: Tensor, vocab_size: int | None = None, *, per_sequence: bool = False) -> float:
    """Entropy (nats) of the token frequencies over every position of ``samples`` (N, L).

    ``vocab_size``: the id range (default: max id + 1); ids outside it raise ValueError.
    ``per_sequence``: instead, the mean over samples of the entropy of each sample's own token
    frequencies (the "entropy" column of MDLM-family papers, e.g. DiDi-Instruct's, on long samples).

    >>> x = torch.tensor([[0, 1], [2, 3]])
    >>> round(unigram_entropy(x), 4), round(unigram_entropy(x, per_sequence=True), 4)
    (1.3863, 0.6931)
    """
    samples = _check_samples(samples)
    if bool((samples < 0).any()):
        raise ValueError("`samples` holds negative token ids")
    if vocab_size is not None:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"`vocab_size` must be an int >= 1, got {vocab_size!r}")
        if bool((samples >= vocab_size).any()):
            raise ValueError(f"`samples` holds token ids outside [0, {vocab_size})")
    # counts of the ids present only (absent tokens add 0): the work is O(N L) whatever the id range
    if per_sequence:
        s = samples.sort(1).values
        new = torch.ones_like(s, dtype=torch.bool)
        new[:, 1:] = s[:, 1:] != s[:, :-1]
        run = new.long().cumsum(1) - 1  # per row, the index of each token's distinct value
        counts = torch.zeros(s.shape, dtype=torch.float64, device=s.device)
        freq = counts.scatter_add_(1, run, torch.ones_like(counts)) / s.shape[1]
        return float(-torch.special.xlogy(freq, freq).sum(-1).mean())
    freq = torch.unique(samples, return_counts=True)[1].double() / samples.numel()
    return float(-torch.special.xlogy(freq, freq).sum())
