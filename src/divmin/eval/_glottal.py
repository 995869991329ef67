"""Glottal instants: GCI / GOI detection from an EGG and Naylor's identification measures.

Sign convention: the EGG is taken as *contact-positive* (it rises as the vocal folds
close and the contact area grows), the common one in the EGG literature. Then the
derivative dEGG has its strongest positive peak at the glottal closure instant (GCI)
and its strongest negative peak at the glottal opening instant (GOI). The paper
(Prathosh et al., 2019, "Adversarial Approximate Inference for Speech to
Electroglottograph Conversion") detects GCIs / GOIs from the peaks of dEGG; negate a
recording stored with the opposite polarity before calling :func:`detect_egg_instants`.

Measures (Naylor et al., 2007, "Estimation of glottal closure instants in voiced speech
using the DYPSA algorithm", IEEE TASLP): each reference instant r_i owns the larynx
cycle ((r_{i-1} + r_i)/2, (r_i + r_{i+1})/2]; the first and last cycles are mirrored
(half the adjacent interval on their open side). A cycle with exactly one estimate is
an identification, with none a miss, with more than one a false alarm. Estimates
outside every cycle are ignored. IDA is the standard deviation (ddof=0) of the timing
errors e = estimate - reference over the identified cycles, in milliseconds.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..divergences import check_real

__all__ = ["GCIMetrics", "GlottalInstants", "detect_egg_instants", "gci_metrics", "mono_signal", "real_array"]


class GlottalInstants(NamedTuple):
    """Glottal closure and opening instants, in seconds (float64 arrays, increasing)."""

    gci: np.ndarray
    goi: np.ndarray


class GCIMetrics(NamedTuple):
    """Naylor's measures: rates in [0, 1] over ``n_cycles``, IDA and bias in ms (NaN if no hit)."""

    idr: float
    mr: float
    far: float
    ida_ms: float
    bias_ms: float
    n_cycles: int


def real_array(x, name: str) -> np.ndarray:
    """``x`` (array, sequence or tensor of any real dtype) as a float64 array; TypeError naming ``name``
    for complex or non-numeric input (NumPy would drop an imaginary part with a mere warning).

    >>> real_array([1, 2], "x").dtype
    dtype('float64')
    """
    if hasattr(x, "detach"):  # a tensor, bfloat16 included (which NumPy cannot read)
        if x.is_complex():
            raise TypeError(f"`{name}` must be real, got a complex tensor")
        x = x.detach().cpu().double()
    try:  # a ragged or non-numeric sequence fails in NumPy either here or in the conversion
        if np.iscomplexobj(x):
            raise TypeError(f"`{name}` must be real, got a complex array")
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        if str(err).startswith(f"`{name}`"):
            raise
        raise TypeError(f"`{name}` must be an array of real numbers: {err}") from None


def mono_signal(x, name: str, *, bound: float | None = None) -> np.ndarray:
    """``x`` as a non-empty, finite, 1-D float64 array (:func:`real_array`); ValueError naming ``name``.

    ``bound``: also require ``|x| <= bound`` (1 for PCM samples in [-1, 1)).
    """
    arr = real_array(x, name)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be mono (1-D), got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"`{name}` must not be empty")
    if bound is None and not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite")
    if bound is not None and (not np.all(np.isfinite(arr)) or np.max(np.abs(arr)) > bound):
        raise ValueError(f"`{name}` must be finite and within [{-bound:g}, {bound:g}]; scale it first")
    return arr


def _rate(sample_rate, name: str = "sample_rate") -> float:
    return check_real(name, sample_rate, gt=0)


def _fraction(value, name: str) -> float:
    """A number in the open interval (0, 1)."""
    value = check_real(name, value, gt=0)
    if not value < 1:
        raise ValueError(f"`{name}` must be in (0, 1), got {value!r}")
    return value


def detect_egg_instants(egg, sample_rate: float, *, f0_max: float = 500.0, threshold: float = 0.3,
                        smooth_ms: float = 0.0, local_s: float | None = None,
                        period_fraction: float | None = None, f0_min: float = 50.0) -> GlottalInstants:
    """GCIs and GOIs of a contact-positive EGG (T,) from the peaks of its derivative.

    ``d[n] = (egg[n+1] - egg[n-1]) / 2`` (central difference), optionally smoothed by a
    normalised Hann window of ``smooth_ms`` milliseconds (for estimated, noisy EGGs). GCIs
    are the positive peaks of d above ``threshold * max(d)``, at least ``1 / f0_max`` apart;
    with ``local_s`` the max is taken over a centred window of ``local_s`` seconds instead of
    the whole signal (an adaptive threshold that follows slow level changes). With
    ``period_fraction`` the peaks must also be at least that fraction of the average pitch
    period apart, the period being the lag of the largest autocorrelation of d between
    ``1 / f0_max`` and ``1 / f0_min`` (as ZFF uses an average period: this removes a second
    peak inside one long cycle of an estimated EGG). Each GOI is
    the most negative d between two consecutive GCIs (for the last GCI, within one
    median period after it), kept if below ``-threshold * max(-d)``. Returns seconds.

    >>> egg = np.tile(np.r_[np.zeros(40), np.ones(40)], 3)
    >>> inst = detect_egg_instants(egg, 8000.0)
    >>> (inst.gci * 8000).round().tolist(), (inst.goi * 8000).round().tolist()
    ([39.0, 119.0, 199.0], [79.0, 159.0])
    """
    from scipy.signal import find_peaks

    egg, fs = mono_signal(egg, "egg"), _rate(sample_rate)
    f0_min = _rate(f0_min, "f0_min")
    f0_max = check_real("f0_max", f0_max, gt=f0_min)  # the pitch range [f0_min, f0_max] must not be empty
    threshold = _fraction(threshold, "threshold")
    smooth_ms = check_real("smooth_ms", smooth_ms, ge=0)
    local_s = None if local_s is None else _rate(local_s, "local_s")
    period_fraction = None if period_fraction is None else _fraction(period_fraction, "period_fraction")
    d = np.gradient(egg)
    width = int(round(smooth_ms * 1e-3 * fs))
    if width >= 2:
        w = np.hanning(width + 2)[1:-1]
        d = np.convolve(d, w / w.sum(), mode="same")
    top, bottom = d.max(), -d.min()
    if top <= 0:
        return GlottalInstants(np.zeros(0), np.zeros(0))
    height = threshold * top
    if local_s is not None:
        from scipy.ndimage import maximum_filter1d

        size = int(min(round(local_s * fs), 2 * d.size + 1))  # a window beyond the signal is the whole signal
        height = threshold * np.maximum(maximum_filter1d(d, max(1, size), mode="nearest"), 1e-12 * top)
    distance = max(1, int(fs / f0_max))
    if period_fraction is not None:
        distance = max(distance, int(period_fraction * _average_period(d, distance, int(fs / f0_min))))
    gci, _ = find_peaks(d, height=height, distance=distance)
    ends = list(gci[1:])
    if len(gci) > 1:
        ends.append(min(len(d), gci[-1] + int(np.median(np.diff(gci)))))
    goi = []
    for start, end in zip(gci, ends):
        k = start + int(np.argmin(d[start:end]))
        if bottom > 0 and d[k] < -threshold * bottom:
            goi.append(k)
    return GlottalInstants(gci / fs, np.asarray(goi, dtype=np.float64) / fs)


def _average_period(d: np.ndarray, lo: int, hi: int) -> int:
    """Lag (samples) in [lo, hi] of the largest autocorrelation of ``d`` (``lo`` if none fits)."""
    hi = min(hi, d.size - 1)
    if hi <= lo:
        return lo
    x = d - d.mean()
    spec = np.fft.rfft(x, 2 * x.size)
    ac = np.fft.irfft(spec * np.conj(spec))[: hi + 1]
    return lo + int(np.argmax(ac[lo:]))


def _instants(x, name: str, fs: float | None) -> np.ndarray:
    arr = real_array(x, name)
    if arr.ndim != 1:  # a 2-D table was read as one flattened sequence
        raise ValueError(f"`{name}` must be 1-D, got shape {tuple(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite")
    if np.any(np.diff(arr) <= 0):
        raise ValueError(f"`{name}` must be strictly increasing")
    return arr / fs if fs is not None else arr


def gci_metrics(reference_instants, estimated_instants, *, sample_rate: float | None = None) -> GCIMetrics:
    """Naylor's identification rate, miss rate, false-alarm rate and IDA (module docstring).

    Instants are 1-D, strictly increasing, in seconds, or in samples when ``sample_rate``
    is given. ``IDR + MR + FAR = 1``. At least two reference instants are needed to
    define the larynx cycles. The reference comes first, as in scikit-learn's metrics and
    the GCI literature: with the clustering metrics, the one deliberate exception to
    divmin's model-first order.

    >>> m = gci_metrics([0.01, 0.02, 0.03, 0.04], [0.01, 0.021, 0.031, 0.033])
    >>> round(m.idr, 2), round(m.mr, 2), round(m.far, 2), round(m.ida_ms, 3)
    (0.5, 0.25, 0.25, 0.5)
    """
    fs = None if sample_rate is None else _rate(sample_rate)
    ref = _instants(reference_instants, "reference_instants", fs)
    est = _instants(estimated_instants, "estimated_instants", fs)
    if ref.size < 2:
        raise ValueError(f"`reference_instants` needs at least 2 instants to define cycles, got {ref.size}")
    mid = (ref[1:] + ref[:-1]) / 2
    bounds = np.concatenate([[ref[0] - (mid[0] - ref[0])], mid, [ref[-1] + (ref[-1] - mid[-1])]])
    inside = (est > bounds[0]) & (est <= bounds[-1])
    est = est[inside]
    cycle = np.searchsorted(bounds, est, side="left") - 1  # cycle i covers (bounds[i], bounds[i+1]]
    counts = np.bincount(cycle, minlength=ref.size)
    hit = counts == 1
    n = ref.size
    sole = hit[cycle]  # estimates alone in their cycle
    errors = (est[sole] - ref[cycle[sole]]) * 1e3
    ida = float(errors.std()) if errors.size else float("nan")
    bias = float(errors.mean()) if errors.size else float("nan")
    return GCIMetrics(float(hit.sum() / n), float((counts == 0).sum() / n), float((counts > 1).sum() / n),
                      ida, bias, int(n))
