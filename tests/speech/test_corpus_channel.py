"""Recording channels (against the Butterworth -3 dB points) and the synthetic corpus."""

from __future__ import annotations

import numpy as np
import pytest

from divmin.eval import detect_egg_instants
from divmin.speech import CHANNELS, apply_channel, synthesize, synthesize_corpus


def _gain_db(channel: str, freqs, fs: float = 8000.0) -> np.ndarray:
    n = 1 << 16
    h = np.fft.rfft(apply_channel(np.r_[1.0, np.zeros(n - 1)], fs, channel))
    return 20 * np.log10(np.abs(h[np.round(np.asarray(freqs) * n / fs).astype(int)]))


def test_channels_pass_band_and_cutoffs():
    # Butterworth: -3.01 dB at each cutoff, ~0 dB mid-band, order-n roll-off
    tel = _gain_db("telephone", [300.0, 3400.0, 1000.0, 100.0])
    assert tel[:2] == pytest.approx([-3.01, -3.01], abs=0.05) and abs(tel[2]) < 0.1 and tel[3] < -30
    hp = _gain_db("highpass", [100.0, 1000.0, 25.0])
    assert hp[0] == pytest.approx(-3.01, abs=0.05) and abs(hp[1]) < 0.01
    assert hp[2] == pytest.approx(10 * np.log10(1 / (1 + 4.0 ** 4)), abs=0.1)  # |H|^2 = 1 / (1 + (fc/f)^(2n))
    x = np.random.default_rng(0).standard_normal(300)
    assert np.array_equal(apply_channel(x, 8000.0, "none"), x)


def test_channel_keeps_the_exact_instants_and_bad_input():
    u, v = synthesize(0.3, sample_rate=8000.0, seed=4), synthesize(0.3, sample_rate=8000.0, channel="telephone", seed=4)
    assert np.array_equal(u.gci, v.gci) and np.array_equal(u.egg, v.egg) and not np.allclose(u.speech, v.speech)
    assert np.max(np.abs(detect_egg_instants(v.egg, 8000.0).gci - v.gci)) * 8000 <= 1.0
    with pytest.raises(ValueError, match="channel"):
        apply_channel(np.ones(8), 8000.0, "radio")
    with pytest.raises(ValueError, match="sample_rate"):
        apply_channel(np.ones(8), 6000.0, "telephone")
    with pytest.raises(ValueError, match="signal"):
        apply_channel(np.ones((2, 8)), 8000.0, "none")
    with pytest.raises(ValueError, match="channel"):
        synthesize(0.1, channel="radio")
    assert set(CHANNELS) == {"none", "highpass", "telephone"}


def test_corpus_draws_within_the_ranges_and_seeds_are_disjoint():
    a = synthesize_corpus(6, voices=("modal", "breathy"), f0=(80.0, 200.0), snr_db=(0.0, 10.0),
                          noises=("pink",), channels=tuple(CHANNELS), duration=0.1, seed=1)
    assert {u.voice for u in a} <= {"modal", "breathy"} and all(0 <= u.snr_db <= 10 for u in a)
    for u in a:  # the f0 override: mean period within the range, with the contour's +-5 % vibrato and jitter
        assert 1 / 200 * 0.9 < np.mean(np.diff(u.gci)) < 1 / 80 * 1.1
    b = synthesize_corpus(6, voices=("modal", "breathy"), f0=(80.0, 200.0), snr_db=(0.0, 10.0),
                          noises=("pink",), channels=tuple(CHANNELS), duration=0.1, seed=2)
    assert not any(np.allclose(x.clean, y.clean) for x in a for y in b)
    again = synthesize_corpus(6, voices=("modal", "breathy"), f0=(80.0, 200.0), snr_db=(0.0, 10.0),
                              noises=("pink",), channels=tuple(CHANNELS), duration=0.1, seed=1)
    assert all(np.array_equal(x.speech, y.speech) for x, y in zip(a, again))
    assert synthesize_corpus(1, voices="creaky", duration=0.1)[0].snr_db is None


@pytest.mark.parametrize("kwargs, name", [(dict(n=0), "n"), (dict(voices=("falsetto",)), "voices"),
                                          (dict(noises=()), "noises"), (dict(f0=(200.0, 100.0)), "f0"),
                                          (dict(snr_db=(0.0, 1000.0)), "snr_db")])
def test_corpus_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        synthesize_corpus(**{"n": 1, "duration": 0.1, **kwargs})
