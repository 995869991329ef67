"""Zero-frequency filtering (ZFF) GCI detection on speech, the baseline of the speech-EGG paper.

Murty and Yegnanarayana (2008), "Epoch extraction from speech signals", IEEE TASLP 16(8):

1. x[n] = s[n] - s[n-1] removes any DC offset;
2. two cascaded zero-frequency resonators, each y[n] = 2 y[n-1] - y[n-2] + x[n] (a double
   pole at z = 1), i.e. four cumulative sums;
3. trend removal: subtract the local mean over a window of about 1.5 average pitch
   periods (2N + 1 samples), repeated ``n_trend`` times (three here);
4. epochs (GCIs) at the negative-to-positive zero crossings of the result, refined to
   sub-sample times by linear interpolation.

The sign of the crossing depends on the polarity of the speech: on the synthetic data of
:func:`synthesize` (LF excitation negative at closure) the negative-to-positive crossings
are the GCIs; pass ``polarity=-1`` for inverted recordings. Numerics: the cumulative sums
grow like n^4, so we run in float64 and do the first two of the ``n_trend`` mean
removals right after each resonator instead of after both; all these operators are
linear and shift-invariant, so they commute and the result is the original's away
from the edges (within ~1.5 periods of them the local mean uses a truncated window).
The average pitch period, when not given, is the lag of the largest autocorrelation peak,
between 2.5 and 15 ms, of a first ZFF pass with a 5 ms period guess (the autocorrelation
of raw speech often locks onto a multiple of the F1 period instead).
"""

from __future__ import annotations

import numpy as np

from ..engine import Int, Number
from ..eval import real_array as _real_array

__all__ = ["average_pitch_period", "zff_gci", "zff_signal"]


def _speech(speech) -> np.ndarray:
    x = _real_array(speech, "speech")
    if x.ndim != 1:
        raise ValueError(f"`speech` must be mono (1-D), got shape {tuple(x.shape)}")
    if x.size < 16:
        raise ValueError(f"`speech` is empty or too short ({x.size} samples)")
    if not np.all(np.isfinite(x)):
        raise ValueError("`speech` must be finite")
    return x


def _fs(sample_rate) -> float:
    Number(gt=0)("sample_rate", sample_rate)
    return float(sample_rate)


def average_pitch_period(speech, sample_rate: float, *, min_ms: float = 2.5, max_ms: float = 15.0) -> float:
    """Average pitch period (s) of ``speech`` (T,): argmax of the autocorrelation of a first
    ZFF pass (5 ms guess) between ``min_ms`` and ``max_ms``.

    >>> t = np.arange(4000) / 8000.0
    >>> round(average_pitch_period(np.sign(np.sin(2 * np.pi * 125 * t)), 8000.0) * 1e3, 2)
    8.0
    """
    x, fs = _speech(speech), _fs(sample_rate)
    Number(gt=0)("min_ms", min_ms)
    Number(gt=min_ms)("max_ms", max_ms)
    x = zff_signal(x, fs, pitch_period=min(0.005, (x.size - 1) / fs))
    x = x - x.mean()
    spec = np.fft.rfft(x, 2 * x.size)
    ac = np.fft.irfft(spec * np.conj(spec))[: x.size]
    lo, hi = int(min_ms * 1e-3 * fs), min(x.size - 1, int(max_ms * 1e-3 * fs))
    if hi <= lo or ac[0] <= 0:
        raise ValueError("`speech` is too short or silent to estimate a pitch period")
    return float((lo + np.argmax(ac[lo:hi + 1])) / fs)


def _remove_trend(y: np.ndarray, half: int) -> np.ndarray:
    kernel = np.ones(2 * half + 1)
    counts = np.convolve(np.ones(y.size), kernel, mode="same")
    return y - np.convolve(y, kernel, mode="same") / counts


def zff_signal(speech, sample_rate: float, *, pitch_period: float | None = None, n_trend: int = 3) -> np.ndarray:
    """The zero-frequency filtered signal (T,) of mono ``speech`` (T,), module docstring steps 1-3.

    >>> t = np.arange(4000) / 8000.0
    >>> zff_signal(np.sin(2 * np.pi * 125 * t), 8000.0).shape
    (4000,)
    """
    x, fs = _speech(speech), _fs(sample_rate)
    Int(ge=2, le=10)("n_trend", n_trend)  # more passes change nothing measurable; the bound keeps the work finite
    if pitch_period is not None:
        Number(gt=0)("pitch_period", pitch_period)
    period = average_pitch_period(x, fs) if pitch_period is None else float(pitch_period)
    if not 0 < period * fs < x.size:
        raise ValueError(f"`pitch_period` must be positive and shorter than the signal, got {pitch_period!r}")
    # the window (2 half + 1 samples) may not exceed the signal: np.convolve's "same" would then be longer
    half = max(1, min(int(round(1.5 * period * fs / 2)), (x.size - 1) // 2))
    y = np.diff(x, prepend=x[0])
    for _ in range(2):  # two resonators, each a double integrator
        y = _remove_trend(np.cumsum(np.cumsum(y)), half)
    for _ in range(n_trend - 2):
        y = _remove_trend(y, half)
    return y


def zff_gci(speech, sample_rate: float, *, pitch_period: float | None = None, n_trend: int = 3,
            polarity: int = 1) -> np.ndarray:
    """GCIs (s, increasing) of mono ``speech`` (T,) by ZFF: negative-to-positive zero crossings.

    >>> u = __import__("divmin.speech", fromlist=["synthesize"]).synthesize(0.2, seed=0)
    >>> len(zff_gci(u.speech, u.sample_rate)) > 15
    True
    """
    if polarity not in (1, -1):
        raise ValueError(f"`polarity` must be 1 or -1, got {polarity!r}")
    fs = _fs(sample_rate)
    y = polarity * zff_signal(speech, fs, pitch_period=pitch_period, n_trend=n_trend)
    i = np.flatnonzero((y[:-1] < 0) & (y[1:] >= 0))
    return (i + y[i] / (y[i] - y[i + 1])) / fs
