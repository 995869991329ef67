"""Paired speech / EGG synthesis with exact glottal instants (source-filter model).

Source: LF flow-derivative cycles (:mod:`._lf`, lip radiation folded in) placed on a
jittered f0 contour, scaled per cycle by shimmer, plus aspiration noise gated to the open
phase. Vocal tract: an all-pole filter 1 / prod_k (1 - 2 r_k cos(theta_k) z^-1 + r_k^2 z^-2)
with r_k = exp(-pi B_k / fs), theta_k = 2 pi F_k / fs from vowel formants F_k and
bandwidths B_k (Peterson-Barney-like male values). EGG: a contact-positive signal,
per cycle k with closure c_k (the GCI) and next opening o_{k+1} (the GOI),

    egg(t) = sum_k a_k [S((t - c_k) / w_c) - S((t - o_{k+1}) / w_o)],  S(x) = (1 + tanh x) / 2

so its derivative peaks (positive) at each GCI and (negative) at each GOI; w_c = 0.1 ms
(sharp closure), w_o = 0.4 ms (gradual opening). The EGG has no propagation delay with
respect to the speech. Noise: Gaussian (white, pink or brown) scaled so that the sample SNR
10 log10(sum s^2 / sum n^2) equals ``snr_db`` exactly.

Recording channel (:data:`CHANNELS`), applied to the clean speech before the noise:
"none"; "highpass", a 2nd-order Butterworth high-pass at 100 Hz (the low-cut or
"rumble" filter of microphones and recorders, nonlinear phase); "telephone", a 4th-order
Butterworth band-pass 300-3400 Hz (the ITU-T G.712 telephone band, nonlinear phase).
Zero-frequency filtering reads the glottal epochs from the energy near 0 Hz, which such
channels remove (Yegnanarayana and Murty, 2009, note its degradation on band-limited
speech); the impulse-like excitation is still visible in the pass band.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine import Int, Number
from ..eval import real_array as _real_array
from ._lf import MAX_DURATION_S, VOICE_QUALITIES, VoiceQuality, lf_params_from_rd, lf_waveform, pitch_marks

__all__ = ["CHANNELS", "NOISE_COLORS", "SpeechEGG", "VOWELS", "add_noise", "apply_channel", "egg_from_instants",
           "synthesize", "vocal_tract"]

VOWELS = {  # (formants Hz, bandwidths Hz)
    "a": ((730.0, 1090.0, 2440.0, 3400.0), (80.0, 90.0, 120.0, 150.0)),
    "i": ((270.0, 2290.0, 3010.0, 3500.0), (60.0, 100.0, 120.0, 150.0)),
    "u": ((300.0, 870.0, 2240.0, 3300.0), (60.0, 80.0, 120.0, 150.0)),
    "e": ((530.0, 1840.0, 2480.0, 3500.0), (70.0, 100.0, 120.0, 150.0)),
    "o": ((570.0, 840.0, 2410.0, 3300.0), (70.0, 80.0, 120.0, 150.0)),
}


def _choice(name: str, value, table) -> None:
    if not isinstance(value, str) or value not in table:
        raise ValueError(f"`{name}` must be one of {sorted(table)}, got {value!r}")


@dataclass(frozen=True)
class SpeechEGG:
    """One synthetic utterance: ``speech`` (noisy), ``clean`` speech and ``egg`` (T,) float64,
    exact ``gci`` / ``goi`` in seconds (K,), the ``sample_rate`` and the settings used."""

    speech: np.ndarray
    clean: np.ndarray
    egg: np.ndarray
    gci: np.ndarray
    goi: np.ndarray
    sample_rate: float
    voice: str
    vowel: str
    snr_db: float | None


def _signal(signal) -> np.ndarray:
    """``signal`` as a finite, non-empty, mono (1-D) float64 array (real: complex input is refused)."""
    x = _real_array(signal, "signal")
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"`signal` must be mono (1-D) and non-empty, got shape {tuple(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("`signal` must be finite")
    return x


def vocal_tract(formants, bandwidths, sample_rate: float) -> np.ndarray:
    """Denominator coefficients a (1 + 2K,) of the all-pole tract, for ``scipy.signal.lfilter([1], a, x)``.

    >>> a = vocal_tract([500.0], [100.0], 8000.0)
    >>> a.shape, round(float(a[2]), 4)
    ((3,), 0.9245)
    """
    formants, bandwidths = _instants(formants, "formants"), _instants(bandwidths, "bandwidths")
    if formants.size == 0 or formants.shape != bandwidths.shape:
        raise ValueError(f"`formants` and `bandwidths` must be non-empty and equal in length, "
                         f"got {formants.size} and {bandwidths.size}")
    Number(gt=0)("sample_rate", sample_rate)
    if np.any(formants <= 0) or np.any(formants >= sample_rate / 2) or np.any(bandwidths <= 0):
        raise ValueError("`formants` must lie in (0, sample_rate / 2) and `bandwidths` be positive")
    a = np.ones(1)
    for f, b in zip(formants, bandwidths):
        r = np.exp(-np.pi * b / sample_rate)
        a = np.convolve(a, [1.0, -2 * r * np.cos(2 * np.pi * f / sample_rate), r * r])
    return a


NOISE_COLORS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1 / f^exponent


def add_noise(signal, snr_db: float, rng: np.random.Generator, *, color: str = "white") -> np.ndarray:
    """``signal`` plus Gaussian noise at exactly ``snr_db`` (sample powers), mono (T,).

    ``color``: "white", "pink" (1/f power) or "brown" (1/f^2 power),
    shaped in the DFT domain with no DC component.

    >>> x = np.sin(np.arange(1000) / 5)
    >>> y = add_noise(x, 10.0, np.random.default_rng(0))
    >>> round(float(10 * np.log10(np.sum(x ** 2) / np.sum((y - x) ** 2))), 9)
    10.0
    """
    x = _signal(signal)
    Number(ge=-300, le=300)("snr_db", snr_db)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy Generator, got {type(rng).__name__}")
    scale = np.max(np.abs(x))  # powers of x / scale: no overflow for any finite signal
    if scale == 0:
        raise ValueError("`signal` is silent: the SNR is undefined")
    power = np.sum((x / scale) ** 2)
    _choice("color", color, NOISE_COLORS)
    noise = rng.standard_normal(x.size)
    if NOISE_COLORS[color] > 0:
        spec = np.fft.rfft(noise)
        f = np.arange(spec.size, dtype=np.float64)
        spec[1:] *= f[1:] ** (-NOISE_COLORS[color] / 2)
        spec[0] = 0
        noise = np.fft.irfft(spec, x.size)
    noise *= scale * np.sqrt(power / (np.sum(noise * noise) * 10 ** (snr_db / 10)))
    return x + noise


CHANNELS = {  # name -> (butterworth order, cutoff(s) Hz, btype); None: no filtering
    "none": None,
    "highpass": (2, 100.0, "highpass"),
    "telephone": (4, (300.0, 3400.0), "bandpass"),
}


def apply_channel(signal, sample_rate: float, channel: str) -> np.ndarray:
    """``signal`` (T,) through the recording ``channel`` of :data:`CHANNELS` (causal IIR filter).

    >>> x = np.r_[1.0, np.zeros(3999)]
    >>> y = apply_channel(x, 8000.0, "telephone")  # a band-pass has no DC gain: its impulse response sums to 0
    >>> bool(np.allclose(apply_channel(x, 8000.0, "none"), x)), abs(float(y.sum())) < 1e-9
    (True, True)
    """
    _choice("channel", channel, CHANNELS)
    x = _signal(signal)
    Number(gt=0)("sample_rate", sample_rate)
    spec = CHANNELS[channel]
    if spec is None:
        return x.copy()
    from scipy.signal import butter, sosfilt

    order, cutoff, btype = spec
    if np.max(cutoff) >= sample_rate / 2:
        raise ValueError(f"`sample_rate` {sample_rate!r} is too low for the {channel!r} channel (cutoff {cutoff} Hz)")
    return sosfilt(butter(order, cutoff, btype=btype, fs=sample_rate, output="sos"), x)


def _instants(x, name: str, size: int | None = None) -> np.ndarray:
    """``x`` as a finite 1-D float64 array (of ``size`` entries when given)."""
    arr = _real_array(x, name)
    if arr.ndim != 1 or (size is not None and arr.size != size):
        want = "1-D" if size is None else f"1-D with {size} entries (one per GCI)"
        raise ValueError(f"`{name}` must be {want}, got shape {tuple(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite")
    return arr


# the longest signal built in one call (2^24 samples: 17 minutes at 16 kHz, 134 MB per float64 array)
MAX_SAMPLES = 2 ** 24
_SATURATED = 20.0  # |x| beyond which tanh(x) rounds to +-1 in float64 (1 - tanh 20 = 8e-18)


def egg_from_instants(gci, goi_next, amplitude, n_samples: int, sample_rate: float, *,
                      closure_ms: float = 0.1, opening_ms: float = 0.4) -> np.ndarray:
    """Contact-positive EGG (n_samples,) from closures ``gci`` and following openings ``goi_next``
    (seconds, (K,), each ``goi_next[k] > gci[k]``), per-cycle ``amplitude`` (K,); formula in the
    module docstring. Each cycle's term is exactly 0 in float64 where both tanh are saturated
    (20 widths before its GCI and GOI, or after both), so it is summed over its own span only: the work is
    O(n_samples + K * span), not O(n_samples * K). ``n_samples`` is at most 2^24.

    >>> egg = egg_from_instants([0.002], [0.006], [1.0], 80, 10000.0)
    >>> int(np.argmax(np.gradient(egg))), int(np.argmin(np.gradient(egg)))
    (20, 60)
    """
    gci = _instants(gci, "gci")
    goi = _instants(goi_next, "goi_next", gci.size)
    amp = _instants(amplitude, "amplitude", gci.size)
    if np.any(goi <= gci):
        raise ValueError("`goi_next` must follow its GCI: goi_next[k] > gci[k] for every cycle")
    Int(ge=1, le=MAX_SAMPLES)("n_samples", n_samples)
    Number(gt=0)("sample_rate", sample_rate)
    Number(gt=0)("closure_ms", closure_ms)
    Number(gt=0)("opening_ms", opening_ms)
    egg, fs = np.zeros(n_samples), float(sample_rate)
    wc, wo = closure_ms * 1e-3, opening_ms * 1e-3
    for c, o, a in zip(gci, goi, amp):
        # outside [lo, hi) both tanh are saturated at the same sign: the term is exactly 0
        lo = max(0, int(np.floor(min(c - _SATURATED * wc, o - _SATURATED * wo) * fs)))
        hi = min(n_samples, int(np.ceil(max(c + _SATURATED * wc, o + _SATURATED * wo) * fs)) + 1)
        if lo < hi:
            t = np.arange(lo, hi) / fs
            egg[lo:hi] += a * (np.tanh((t - c) / wc) - np.tanh((t - o) / wo)) / 2
    return egg


def _source(marks, fs: float, n: int, vq: VoiceQuality, rng: np.random.Generator):
    params = lf_params_from_rd(vq.rd)
    src, gate = np.zeros(n), np.zeros(n)
    amps = np.clip(1 + vq.shimmer * rng.standard_normal(len(marks) - 1), 0.3, None)
    for k, (start, end) in enumerate(zip(marks[:-1], marks[1:])):
        idx = np.arange(int(np.ceil(start * fs)), min(n, int(np.ceil(end * fs))))
        phase = np.clip((idx / fs - start) / (end - start), 0, 1 - 1e-12)
        src[idx] = amps[k] * lf_waveform(phase, params)
        gate[idx] = phase <= params.te
    if vq.aspiration > 0:
        src += vq.aspiration * np.sqrt(np.mean(src ** 2)) * gate * rng.standard_normal(n)
    return src, amps, params


def synthesize(duration: float = 0.5, *, sample_rate: float = 16000.0, voice: str = "modal", vowel: str = "a",
               snr_db: float | None = None, noise: str = "white", f0: float | None = None,
               channel: str = "none", seed: int = 0) -> SpeechEGG:
    """Paired speech / EGG with exact GCIs (LF excitation t = te) and GOIs (start of the next
    cycle, t = 0, after each GCI), so ``gci[k] < goi[k] < gci[k + 1]``.

    Speech is normalised to peak 0.9 before the noise; the EGG peaks near 1. Deterministic
    given ``seed``. ``f0`` overrides the voice quality's mean f0; ``noise`` is the noise
    color of :func:`add_noise`; ``channel`` the recording channel of :data:`CHANNELS`
    (``clean`` is the speech after it, before the noise). ``duration`` must hold one whole glottal
    cycle and is at most 600 s, and ``duration * sample_rate`` at most 2^24 samples (the work and
    memory are linear in both).

    >>> u = synthesize(0.1, voice="modal", seed=0)
    >>> u.speech.shape, len(u.gci) == len(u.goi), bool(np.all(u.gci < u.goi))
    ((1600,), True, True)
    """
    _choice("voice", voice, VOICE_QUALITIES)
    _choice("vowel", vowel, VOWELS)
    _choice("noise", noise, NOISE_COLORS)
    Number(gt=0, le=MAX_DURATION_S)("duration", duration)
    Number(ge=4000)("sample_rate", sample_rate)
    if duration * sample_rate > MAX_SAMPLES:
        raise ValueError(f"`sample_rate` * `duration` must be at most {MAX_SAMPLES} samples, got "
                         f"{duration * sample_rate:.4g}")
    _choice("channel", channel, CHANNELS)
    Int(ge=0)("seed", seed)
    if snr_db is not None:
        Number()("snr_db", snr_db)
    from scipy.signal import lfilter

    vq, rng, fs = VOICE_QUALITIES[voice], np.random.default_rng(seed), float(sample_rate)
    n = int(round(duration * fs))
    marks = pitch_marks(duration, fs, f0=vq.f0 if f0 is None else f0, jitter=vq.jitter, rng=rng)
    if len(marks) < 2:
        raise ValueError(f"`duration` ({duration!r} s) must hold at least one whole glottal cycle "
                         f"(f0 {vq.f0 if f0 is None else f0} Hz)")
    src, amps, params = _source(marks, fs, n, vq, rng)
    clean = lfilter([1.0], vocal_tract(*VOWELS[vowel], fs), src)
    clean = apply_channel(clean, fs, channel)
    clean *= 0.9 / np.max(np.abs(clean))
    gci = marks[:-1] + params.te * np.diff(marks)
    egg = egg_from_instants(gci, marks[1:], vq.contact * amps / amps.max(), n, fs)
    speech = clean.copy() if snr_db is None else add_noise(clean, snr_db, rng, color=noise)
    return SpeechEGG(speech, clean, egg, gci, marks[1:], fs, voice, vowel, snr_db)
