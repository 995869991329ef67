"""A corpus of synthetic utterances drawn over voices, vowels, f0, SNR, noise colours and channels."""

from __future__ import annotations

import numpy as np

from ._lf import VOICE_QUALITIES
from ._synth import CHANNELS, NOISE_COLORS, VOWELS, SpeechEGG, synthesize

__all__ = ["synthesize_corpus"]


def _names(values, table, name: str) -> tuple[str, ...]:
    values = (values,) if isinstance(values, str) else tuple(values)
    bad = [v for v in values if v not in table]
    if not values or bad:
        raise ValueError(f"`{name}` must be a non-empty choice from {sorted(table)}, got {values!r}")
    return values


def _range(value, name: str, lo: float, hi: float) -> tuple[float, float]:
    a, b = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if not lo <= a <= b <= hi:
        raise ValueError(f"`{name}` must be a number or a (low, high) pair within [{lo}, {hi}], got {value!r}")
    return float(a), float(b)


def synthesize_corpus(n: int, *, voices=("modal",), vowels=tuple(VOWELS), f0=None, snr_db=None,
                      noises=("white",), channels=("none",), duration: float = 0.5,
                      sample_rate: float = 8000.0, seed: int = 0) -> list[SpeechEGG]:
    """``n`` utterances of :func:`synthesize`, each with a voice, vowel, noise colour and channel
    drawn uniformly from the given names, f0 uniform in ``f0`` = (low, high) Hz (None: each voice's
    own mean) and SNR uniform in ``snr_db`` = (low, high) dB (None: clean). Utterance i uses
    synthesis seed ``seed * 100003 + i``, so corpora with different ``seed`` share no utterance.

    >>> c = synthesize_corpus(3, voices=("modal", "breathy"), f0=(80, 200), snr_db=(0, 10), duration=0.1)
    >>> len(c), {u.voice for u in c} <= {"modal", "breathy"}, all(0 <= u.snr_db <= 10 for u in c)
    (3, True, True)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be a positive int, got {n!r}")
    voices = _names(voices, VOICE_QUALITIES, "voices")
    vowels = _names(vowels, VOWELS, "vowels")
    noises = _names(noises, NOISE_COLORS, "noises")
    channels = _names(channels, CHANNELS, "channels")
    f0r = None if f0 is None else _range(f0, "f0", 20.0, 1000.0)
    snr = None if snr_db is None else _range(snr_db, "snr_db", -30.0, 100.0)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pick = [str(rng.choice(v)) for v in (voices, vowels, noises, channels)]
        f = None if f0r is None else float(rng.uniform(*f0r))
        s = None if snr is None else float(rng.uniform(*snr))
        out.append(synthesize(duration, sample_rate=sample_rate, voice=pick[0], vowel=pick[1], snr_db=s,
                              noise=pick[2], f0=f, channel=pick[3], seed=seed * 100003 + i))
    return out
