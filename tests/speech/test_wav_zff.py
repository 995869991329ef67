"""WAV round trip of paired speech / EGG, and the ZFF GCI baseline on synthetic speech."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from divmin.eval import gci_metrics
from divmin.speech import average_pitch_period, read_wav, synthesize, write_wav, zff_gci, zff_signal


def test_wav_round_trip_stereo_and_mono(tmp_path):
    u = synthesize(0.2, voice="breathy", seed=2)
    egg = 0.99 * u.egg / np.max(np.abs(u.egg))
    path = write_wav(tmp_path / "pair.wav", u.speech, egg=egg, sample_rate=16000)
    with wave.open(str(path)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (2, 2, 16000)
    speech, egg2, fs = read_wav(path, sample_rate=16000)
    assert fs == 16000 and speech.shape == u.speech.shape
    assert np.max(np.abs(speech - u.speech)) <= 0.5 / 32768 + 1e-12  # 16-bit rounding
    assert np.max(np.abs(egg2 - egg)) <= 0.5 / 32768 + 1e-12
    swapped_speech, swapped_egg, _ = read_wav(path, egg_channel=0)
    assert np.array_equal(swapped_speech, egg2) and np.array_equal(swapped_egg, speech)
    mono = read_wav(write_wav(tmp_path / "mono.wav", u.speech, sample_rate=16000))
    assert mono[1] is None and np.array_equal(mono[0], speech)


def test_wav_bad_input(tmp_path):
    x = np.zeros(100)
    with pytest.raises(ValueError, match="sample_rate"):
        read_wav(write_wav(tmp_path / "a.wav", x, sample_rate=8000), sample_rate=16000)
    with pytest.raises(ValueError, match="speech"):
        write_wav(tmp_path / "b.wav", np.zeros(0), sample_rate=8000)
    with pytest.raises(ValueError, match="speech"):
        write_wav(tmp_path / "c.wav", np.zeros((100, 2)), sample_rate=8000)
    with pytest.raises(ValueError, match="egg"):
        write_wav(tmp_path / "d.wav", x, egg=np.zeros(99), sample_rate=8000)
    with pytest.raises(ValueError, match="speech"):
        write_wav(tmp_path / "e.wav", x + 2.0, sample_rate=8000)
    with wave.open(str(tmp_path / "empty.wav"), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(8000)
    with pytest.raises(ValueError, match="empty"):
        read_wav(tmp_path / "empty.wav")


def test_average_pitch_period_of_synthetic_speech():
    for voice in ("modal", "creaky"):
        u = synthesize(0.6, voice=voice, vowel="a", seed=0)
        assert average_pitch_period(u.speech, u.sample_rate) == pytest.approx(np.median(np.diff(u.gci)), rel=0.05)


def test_zff_identifies_gcis_of_clean_modal_speech():
    rates = []
    for seed, vowel in enumerate("aiu"):
        u = synthesize(0.6, voice="modal", vowel=vowel, seed=seed)
        m = gci_metrics(u.gci, zff_gci(u.speech, u.sample_rate))
        rates.append(m.idr)
        assert m.ida_ms < 0.2
    assert np.mean(rates) >= 0.98
    # inverted polarity puts the crossings elsewhere in the cycle: a large timing bias
    u = synthesize(0.6, voice="modal", seed=0)
    assert abs(gci_metrics(u.gci, zff_gci(u.speech, u.sample_rate, polarity=-1)).bias_ms) > 1.0


def test_zff_bad_input():
    with pytest.raises(ValueError, match="speech"):
        zff_gci(np.zeros((2, 800)), 8000.0)
    with pytest.raises(ValueError, match="speech"):
        zff_gci(np.zeros(0), 8000.0)
    with pytest.raises(ValueError, match="sample_rate"):
        zff_signal(np.ones(800), -1.0)
    with pytest.raises(ValueError, match="polarity"):
        zff_gci(np.ones(800), 8000.0, polarity=0)
