"""Diversity of generated text: distinct-n and self-BLEU (on token or word lists)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Hashable, Iterable, Sequence

__all__ = ["distinct_n", "self_bleu"]

Tokens = Sequence[Hashable]


def _check_int(name: str, value: object, ge: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int >= {ge}, got {type(value).__name__} {value!r}")
    if value < ge:
        raise ValueError(f"`{name}` must be >= {ge}, got {value}")
    return value


def _check_samples(samples: object) -> list[Tokens]:
    """A sequence of token sequences (lists, tuples, 1-D tensors); a bare string is refused (it would
    silently count characters of one sample as samples)."""
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Iterable):
        raise TypeError(f"`samples` must be a sequence of token sequences, got {type(samples).__name__}")
    out = [s.tolist() if hasattr(s, "tolist") else s for s in samples]
    for i, s in enumerate(out):
        if isinstance(s, (str, bytes)) or not isinstance(s, Sequence):
            raise TypeError(f"`samples[{i}]` must be a sequence of tokens (e.g. a list of words or ids), "
                            f"got {type(s).__name__}")
        try:
            [hash(tok) for tok in s]
        except TypeError:
            raise TypeError(f"`samples[{i}]` holds an unhashable token") from None
    return out


def distinct_n(samples: Sequence[Tokens], n: int = 2) -> float:
    """Unique / total n-grams over all ``samples`` (0 when there is none). Higher is more diverse.

    >>> distinct_n([["a", "b", "a", "b"]], 2)  # bigrams ab, ba, ab
    0.6666666666666666
    """
    n, samples = _check_int("n", n, 1), _check_samples(samples)
    grams = [tuple(s[i:i + n]) for s in samples for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _ngrams(tokens: Tokens, n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _bleu(hyp: Tokens, refs: Sequence[Tokens], max_n: int) -> float:
    """Sentence BLEU of ``hyp`` against ``refs``: clipped n-gram precisions (add-one smoothed for
    n > 1, Lin & Och 2004), geometric mean, brevity penalty against the closest reference length."""
    if not hyp:
        return 0.0
    log_p = 0.0
    for n in range(1, max_n + 1):
        h = _ngrams(hyp, n)
        max_ref: Counter = Counter()
        for r in refs:
            max_ref |= _ngrams(r, n)
        match = sum(min(c, max_ref[g]) for g, c in h.items())
        total = sum(h.values())
        if n == 1:
            if match == 0:
                return 0.0
            log_p += math.log(match / total)
        else:
            log_p += math.log((match + 1) / (total + 1))
    closest = min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
    bp = 1.0 if len(hyp) > closest else math.exp(1 - closest / len(hyp))
    return bp * math.exp(log_p / max_n)


def self_bleu(samples: Sequence[Tokens], max_n: int = 4, max_samples: int | None = 200) -> float:
    """Mean BLEU of each sample against all the others (Zhu et al. 2018). Lower is more diverse.

    Quadratic in the number of samples: only the first ``max_samples`` are used.

    >>> self_bleu([["a", "b", "c"], ["a", "b", "c"]])
    1.0
    """
    max_n, samples = _check_int("max_n", max_n, 1), _check_samples(samples)
    if max_samples is not None:
        samples = samples[:_check_int("max_samples", max_samples, 2)]
    if len(samples) < 2:
        raise ValueError(f"`samples`: self-BLEU needs at least 2 samples, got {len(samples)}")
    scores = [_bleu(s, samples[:i] + samples[i + 1:], max_n) for i, s in enumerate(samples)]
    return sum(scores) / len(scores)
