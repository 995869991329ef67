"""Synthetic speech / EGG: the LF model, exact instants, exact SNR."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad

from divmin.eval import detect_egg_instants
from divmin.speech import (VOICE_QUALITIES, LFParams, add_noise, lf_params_from_rd, lf_waveform, pitch_marks,
                           synthesize, vocal_tract)


@pytest.mark.parametrize("rd", [0.3, 0.5, 1.0, 2.3, 2.7])
def test_lf_cycle_has_zero_net_flow_and_unit_excitation(rd):
    p = lf_params_from_rd(rd)
    net, _ = quad(lambda t: float(lf_waveform(np.array([t]), p)[0]), 0, 1 - 1e-12, points=[p.tp, p.te], limit=200)
    assert abs(net) < 1e-6
    assert lf_waveform(np.array([p.te]), p)[0] == pytest.approx(-1.0, abs=1e-9)
    # continuity at te and closed glottis (zero flow derivative) at the cycle's end
    assert lf_waveform(np.array([p.te + 1e-9]), p)[0] == pytest.approx(-1.0, abs=1e-5)
    assert abs(lf_waveform(np.array([1 - 1e-9]), p)[0]) < 1e-6
    # flow rises then falls: positive flow derivative before tp
    assert lf_waveform(np.array([p.tp / 2]), p)[0] > 0


def test_rd_matches_fant_1995_values():
    # Fant's Rd ~ 1 modal point: Rk ~ 0.34, Ra ~ 0.038
    p = lf_params_from_rd(1.0)
    assert (p.te - p.tp) / p.tp == pytest.approx(0.342, abs=1e-9)
    assert p.ta == pytest.approx(0.038, abs=1e-12)


@pytest.mark.parametrize("voice", sorted(VOICE_QUALITIES))
def test_synthetic_instants_are_the_degg_peaks(voice):
    u = synthesize(0.4, voice=voice, vowel="i", seed=3)
    fs = u.sample_rate
    found = detect_egg_instants(u.egg, fs)
    assert len(found.gci) == len(u.gci) and len(found.goi) == len(u.goi) - (u.goi[-1] * fs >= len(u.egg) - 2)
    assert np.max(np.abs(found.gci - u.gci)) * fs <= 1.0
    k = len(found.goi)
    assert np.max(np.abs(found.goi - u.goi[:k])) * fs <= 1.0
    assert np.all(np.diff(u.gci) > 0) and np.all(u.gci < u.goi) and np.all(u.goi[:-1] < u.gci[1:])


def test_deterministic_and_seeded():
    a, b, c = synthesize(0.2, seed=5, snr_db=5.0), synthesize(0.2, seed=5, snr_db=5.0), synthesize(0.2, seed=6)
    assert np.array_equal(a.speech, b.speech) and np.array_equal(a.egg, b.egg)
    assert not np.array_equal(a.gci, c.gci)


@pytest.mark.parametrize("snr", [0.0, 5.0, 10.0])
def test_snr_is_exact(snr):
    u = synthesize(0.3, voice="breathy", snr_db=snr, seed=1)
    measured = 10 * np.log10(np.sum(u.clean ** 2) / np.sum((u.speech - u.clean) ** 2))
    assert measured == pytest.approx(snr, abs=1e-9)


@pytest.mark.parametrize("color", ["pink", "brown"])
def test_colored_noise_has_exact_snr_and_its_slope(color):
    rng = np.random.default_rng(0)
    x = np.sin(np.arange(8000) / 3.0)
    noise = add_noise(x, 3.0, rng, color=color) - x
    assert 10 * np.log10(np.sum(x ** 2) / np.sum(noise ** 2)) == pytest.approx(3.0, abs=1e-9)
    power = np.abs(np.fft.rfft(noise)) ** 2
    low, high = power[1:400].mean(), power[2000:4000].mean()
    assert low / high > (20 if color == "pink" else 200)  # white would give ~1
    assert abs(noise.mean()) < 1e-9  # no DC
    with pytest.raises(ValueError, match="color"):
        add_noise(x, 3.0, rng, color="blue")


def test_pitch_follows_f0_and_creaky_is_lower():
    marks = pitch_marks(1.0, 16000, f0=200.0, vibrato=0.0)
    assert np.allclose(np.diff(marks), 1 / 200.0) and len(marks) == 201
    assert np.median(np.diff(synthesize(0.4, voice="creaky").gci)) > 1.5 * np.median(np.diff(synthesize(0.4).gci))


def test_vocal_tract_resonates_at_the_formant():
    from scipy.signal import freqz

    fs = 16000.0
    w, h = freqz([1.0], vocal_tract([700.0, 1800.0], [80.0, 100.0], fs), worN=4096, fs=fs)
    peak = w[np.argmax(np.abs(h))]
    assert abs(peak - 700.0) < 20


def test_bad_input():
    with pytest.raises(ValueError, match="rd"):
        lf_params_from_rd(5.0)
    with pytest.raises(ValueError, match="params"):
        lf_waveform(np.array([0.1]), LFParams(0.5, 0.4, 0.1))
    with pytest.raises(ValueError, match="signal"):
        add_noise(np.zeros(0), 10.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="signal"):
        add_noise(np.ones((2, 10)), 10.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="voice"):
        synthesize(0.1, voice="falsetto")
    with pytest.raises(ValueError, match="formants"):
        vocal_tract([9000.0], [100.0], 16000.0)
