"""Enumerable sequence spaces: every sequence of length L over V tokens, and two
autoregressive models whose log-probabilities are exact on all of them.

With ``V ** L`` up to ~1e4 the whole space fits in one tensor, so partition
functions, divergences and their gradients can be computed exactly and used
as oracles for Monte-Carlo estimators (f-DPG, f-DPO).

- :class:`PrefixTreeLM` has one logit vector per prefix: it can represent ANY
  distribution over the space (used as a random "base model").
- :class:`BigramLM` has one logit vector per (position, previous token): a
  capacity-limited policy that cannot represent most targets exactly.

Both are ``nn.Module`` s with ``log_prob(seqs) -> (N,)`` and
``sample(n, generator) -> (n, L)``.

>>> seqs = all_sequences(3, 2)
>>> seqs.shape
torch.Size([9, 2])
>>> lm = BigramLM(3, 2)
>>> round(float(lm.log_prob(seqs).detach().exp().sum()), 6)  # a distribution over the 9 sequences
1.0
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

__all__ = ["BigramLM", "PrefixTreeLM", "all_sequences"]


def all_sequences(vocab_size: int, length: int) -> Tensor:
    """(V ** L, L) long tensor of every sequence, in lexicographic order."""
    if vocab_size < 1 or length < 1:
        raise ValueError(f"`vocab_size` and `length` must be >= 1, got {vocab_size}, {length}")
    if vocab_size ** length > 10 ** 6:
        raise ValueError(f"V ** L = {vocab_size ** length} sequences is too many to enumerate (max 1e6)")
    return torch.tensor(list(itertools.product(range(vocab_size), repeat=length)), dtype=torch.long)


class _AutoregressiveTable(nn.Module):
    """Shared sampling / scoring for models whose next-token logits are looked up in a table."""

    vocab_size: int
    length: int

    def step_logits(self, prefix: Tensor) -> Tensor:
        """(n, t) prefix -> (n, V) next-token logits at position t."""
        raise NotImplementedError

    def log_prob(self, seqs: Tensor) -> Tensor:
        """(N, L) long -> (N,) exact log-probabilities (differentiable in the table)."""
        if seqs.dim() != 2 or seqs.shape[1] != self.length:
            raise ValueError(f"`seqs` must have shape (N, {self.length}), got {tuple(seqs.shape)}")
        if seqs.dtype != torch.long or bool((seqs < 0).any() | (seqs >= self.vocab_size).any()):
            raise ValueError(f"`seqs` must be long tensors with values in [0, {self.vocab_size})")
        total = torch.zeros(seqs.shape[0], dtype=torch.float32, device=seqs.device)
        for t in range(self.length):
            logp = torch.log_softmax(self.step_logits(seqs[:, :t]).float(), dim=-1)  # (N, V)
            total = total + logp.gather(1, seqs[:, t:t + 1]).squeeze(1)
        return total

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, L) ancestral samples (on CPU, reproducible through ``generator``)."""
        seqs = torch.empty(n, 0, dtype=torch.long)
        for _ in range(self.length):
            probs = torch.softmax(self.step_logits(seqs).float(), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)
            seqs = torch.cat([seqs, nxt], dim=1)
        return seqs


class PrefixTreeLM(_AutoregressiveTable):
    """Full-capacity autoregressive model: one logit vector per prefix (sum_t V^t of them).

    ``scale`` sets the spread of the random initial logits (a peakier base for larger values).
    """

    def __init__(self, vocab_size: int, length: int, *, scale: float = 1.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.vocab_size, self.length = vocab_size, length
        n_prefixes = sum(vocab_size ** t for t in range(length))
        self.logits = nn.Parameter(scale * torch.randn(n_prefixes, vocab_size, generator=generator))
        # row of prefix (x_1..x_t) = offset_t + index of the prefix in base V
        self.register_buffer("offsets", torch.tensor([sum(vocab_size ** s for s in range(t)) for t in range(length)]),
                             persistent=False)

    def step_logits(self, prefix: Tensor) -> Tensor:
        t = prefix.shape[1]
        index = torch.zeros(prefix.shape[0], dtype=torch.long, device=prefix.device)
        for s in range(t):
            index = index * self.vocab_size + prefix[:, s]
        return self.logits[self.offsets[t] + index]


class BigramLM(_AutoregressiveTable):
    """Capacity-limited policy: logits[t, previous token] (position 0 uses a start row)."""

    def __init__(self, vocab_size: int, length: int, *, scale: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.vocab_size, self.length = vocab_size, length
        # (L, V + 1, V): row V is the start-of-sequence context
        self.logits = nn.Parameter(scale * torch.randn(length, vocab_size + 1, vocab_size, generator=generator))

    def step_logits(self, prefix: Tensor) -> Tensor:
        t = prefix.shape[1]
        prev = prefix[:, -1] if t else torch.full((prefix.shape[0],), self.vocab_size, dtype=torch.long,
                                                    device=prefix.device)
        return self.logits[t, prev]
