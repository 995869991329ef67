"""The Liljencrants-Fant (LF) glottal-flow-derivative model, voice qualities and pitch contours.

One glottal cycle in normalised time t in [0, 1) (Fant, Liljencrants and Lin, 1985,
"A four-parameter model of glottal flow", STL-QPSR 26(4)):

    E(t) = E0 exp(alpha t) sin(pi t / tp)                                 0 <= t <= te
    E(t) = -(Ee / (eps ta)) (exp(-eps (t - te)) - exp(-eps (1 - te)))      te < t < 1

with eps ta = 1 - exp(-eps (1 - te)), E(te) = -Ee = -1, and alpha chosen so that the
flow returns to zero (the integral of E over the cycle vanishes). The glottis opens at
t = 0 (the GOI) and the main excitation, the GCI, is at t = te. The one-parameter
version uses Rd (Fant, 1995, "The LF-model revisited", STL-QPSR 36(2-3)):
Ra = (-1 + 4.8 Rd)/100, Rk = (22.4 + 11.8 Rd)/100,
Rg = Rk / 4 / (0.11 Rd / (0.5 + 1.2 Rk) - Ra); then tp = 1/(2 Rg), te = tp (1 + Rk), ta = Ra.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..engine import Number
from ..eval import real_array as _real_array

__all__ = ["LFParams", "VOICE_QUALITIES", "VoiceQuality", "lf_params_from_rd", "lf_waveform", "pitch_marks"]

# the longest signal synthesised in one call (10 minutes): pitch marks are placed one cycle at a time
MAX_DURATION_S = 600.0


class LFParams(NamedTuple):
    """LF timing parameters as fractions of the period: peak flow tp < excitation te < 1, return ta."""

    tp: float
    te: float
    ta: float


def lf_params_from_rd(rd: float) -> LFParams:
    """(tp, te, ta) from Fant's shape parameter Rd (0.3 tense ... 2.7 lax), module docstring.

    >>> [round(v, 3) for v in lf_params_from_rd(1.0)]
    [0.484, 0.65, 0.038]
    """
    if isinstance(rd, bool) or not isinstance(rd, (int, float)) or not 0.3 <= rd <= 2.7:
        raise ValueError(f"`rd` must be a number in [0.3, 2.7], got {rd!r}")
    ra, rk = (-1 + 4.8 * rd) / 100, (22.4 + 11.8 * rd) / 100
    rg = rk / 4 / (0.11 * rd / (0.5 + 1.2 * rk) - ra)
    tp = 1 / (2 * rg)
    return LFParams(tp, tp * (1 + rk), ra)


def _check(params: LFParams) -> LFParams:
    try:
        tp, te, ta = (float(v) for v in params)
    except (TypeError, ValueError):
        raise TypeError(f"`params` must be an LFParams (tp, te, ta), got {params!r}") from None
    if not (0 < tp < te < 1 and 0 < ta < 1 - te):
        raise ValueError(f"`params` must satisfy 0 < tp < te < 1 and 0 < ta < 1 - te, got {params!r}")
    return LFParams(tp, te, ta)


@functools.lru_cache(maxsize=256)  # one root per voice quality, reused by every cycle of an utterance
def _epsilon(te: float, ta: float) -> float:
    from scipy.optimize import brentq

    return brentq(lambda e: e * ta - 1 + np.exp(-e * (1 - te)), 1e-9 + 1 / ta * 1e-3, 1e3 / ta)


@functools.lru_cache(maxsize=256)
def _alpha(tp: float, te: float, ta: float, eps: float) -> float:
    """alpha making the cycle's flow return to zero (integral of E = 0), by root finding."""
    from scipy.optimize import brentq

    wg = np.pi / tp
    ret = -(1 / (eps * ta)) * ((1 - np.exp(-eps * (1 - te))) / eps - (1 - te) * np.exp(-eps * (1 - te)))

    def total(a: float) -> float:
        e0 = -1 / (np.exp(a * te) * np.sin(wg * te))
        opening = e0 * (np.exp(a * te) * (a * np.sin(wg * te) - wg * np.cos(wg * te)) + wg) / (a * a + wg * wg)
        return opening + ret

    return brentq(total, -50.0, 500.0)


def lf_waveform(t, params: LFParams) -> np.ndarray:
    """LF flow derivative E(t) at normalised times ``t`` in [0, 1) (any shape), with E(te) = -1.

    >>> p = lf_params_from_rd(1.0)
    >>> round(float(lf_waveform(np.array([p.te]), p)[0]), 6)
    -1.0
    """
    tp, te, ta = _check(params)
    t = _real_array(t, "t")
    if np.any((t < 0) | (t >= 1)):
        raise ValueError("`t` must lie in [0, 1)")
    eps = _epsilon(te, ta)
    alpha = _alpha(tp, te, ta, eps)
    wg = np.pi / tp
    e0 = -1 / (np.exp(alpha * te) * np.sin(wg * te))
    open_ = e0 * np.exp(alpha * t) * np.sin(wg * t)
    closing = -(np.exp(-eps * (t - te)) - np.exp(-eps * (1 - te))) / (eps * ta)
    return np.where(t <= te, open_, closing)


@dataclass(frozen=True)
class VoiceQuality:
    """A voice quality: LF shape ``rd``, mean f0 (Hz), cycle jitter and shimmer (relative std),
    aspiration noise (relative to the source's RMS, during the open phase) and contact
    amplitude of the EGG (below 1: incomplete closure)."""

    rd: float
    f0: float
    jitter: float
    shimmer: float
    aspiration: float
    contact: float


VOICE_QUALITIES = {
    "modal": VoiceQuality(rd=1.0, f0=120.0, jitter=0.005, shimmer=0.02, aspiration=0.0, contact=1.0),
    "breathy": VoiceQuality(rd=2.3, f0=130.0, jitter=0.01, shimmer=0.04, aspiration=0.3, contact=0.5),
    "creaky": VoiceQuality(rd=0.5, f0=70.0, jitter=0.04, shimmer=0.12, aspiration=0.0, contact=1.0),
    "whispery": VoiceQuality(rd=1.8, f0=125.0, jitter=0.02, shimmer=0.06, aspiration=0.8, contact=0.35),
}


def pitch_marks(duration: float, sample_rate: float, *, f0: float, jitter: float = 0.0, vibrato: float = 0.05,
                rate_hz: float = 3.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Cycle start times (s) of a slowly varying f0 contour with jitter, covering ``duration``.

    f0(t) = f0 (1 + vibrato sin(2 pi rate_hz t + phi)); each period is 1/f0(t_k) scaled by
    (1 + jitter z_k), z_k ~ N(0, 1) clipped to [-3, 3]. Returns starts t_0 = 0 < t_1 < ...,
    the last one the end of the last whole cycle inside ``duration`` (so K cycles, K + 1 marks).
    ``duration`` is at most 600 s (the work is one step per cycle); ``sample_rate`` is checked only.

    >>> marks = pitch_marks(0.05, 16000, f0=100.0, vibrato=0.0)
    >>> np.round(marks, 4).tolist()
    [0.0, 0.01, 0.02, 0.03, 0.04, 0.05]
    """
    Number(gt=0, le=MAX_DURATION_S)("duration", duration)
    Number(gt=0)("sample_rate", sample_rate)
    Number(ge=20, le=1000)("f0", f0)
    Number(ge=0, lt=0.2)("jitter", jitter)
    Number(ge=0, lt=0.5)("vibrato", vibrato)
    Number(ge=0)("rate_hz", rate_hz)
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy Generator or None, got {type(rng).__name__}")
    rng = np.random.default_rng(0) if rng is None else rng
    phase = rng.uniform(0, 2 * np.pi) if vibrato > 0 else 0.0
    marks = [0.0]
    while True:
        t = marks[-1]
        period = 1 / (f0 * (1 + vibrato * np.sin(2 * np.pi * rate_hz * t + phase)))
        period *= 1 + jitter * float(np.clip(rng.standard_normal(), -3, 3))
        if t + period > duration + 1e-12:
            break
        marks.append(t + period)
    return np.asarray(marks)
