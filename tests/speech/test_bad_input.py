"""Issue 26 section 4, speech: each bad input gets a correct value or an error naming the argument,
and nothing runs unbounded."""

import math

import numpy as np
import pytest
import torch

from divmin.engine import EngineConfig
from divmin.eval import detect_egg_instants
from divmin.speech import (SpeechToEGGTrainer, SpeechToEGGConfig, egg_from_instants, egg_loss, normalize_speech, overlap_add,
                           pitch_marks, read_wav, synthesize, write_wav)


def _dense_egg(gci, goi, amp, n, fs, wc=1e-4, wo=4e-4):
    """The module docstring's formula, summed over every sample (the oracle of the windowed sum)."""
    t = np.arange(n) / fs
    return sum(a * (np.tanh((t - c) / wc) - np.tanh((t - o) / wo)) / 2 for c, o, a in zip(gci, goi, amp))


def test_egg_from_instants_matches_the_dense_formula():
    rng = np.random.default_rng(0)
    starts = np.cumsum(rng.uniform(0.004, 0.012, 30))
    gci, goi, amp = starts + 0.002, starts + rng.uniform(0.003, 0.006, 30), rng.uniform(0.3, 1.0, 30)
    fs, n = 16000.0, int(0.4 * 16000)
    assert np.allclose(egg_from_instants(gci, goi, amp, n, fs), _dense_egg(gci, goi, amp, n, fs), atol=1e-14, rtol=0)


@pytest.mark.parametrize("args, match", [
    (([0.002, 0.01], [0.006], [1.0], 80, 1e4), "`goi_next`"),  # mismatched lengths
    (([0.002], [0.006], [1.0, 0.5], 80, 1e4), "`amplitude`"),
    (([0.006], [0.002], [1.0], 80, 1e4), "`goi_next`"),  # GOI before its GCI
    (([0.002], [0.006], [1.0], 0, 1e4), "`n_samples`"),
    (([0.002], [0.006], [1.0], 2.5, 1e4), "`n_samples`"),
    (([0.002], [0.006], [1.0], 10 ** 12, 1e4), "`n_samples`"),  # unbounded memory
    (([math.nan], [0.006], [1.0], 80, 1e4), "`gci`"),
    (([0.002], [0.006], [1.0], 80, 0.0), "`sample_rate`"),
    (([[0.002]], [[0.006]], [[1.0]], 80, 1e4), "`gci`"),
])
def test_egg_from_instants_refuses_bad_input(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        egg_from_instants(*args)


def test_egg_from_instants_refuses_bad_widths():
    with pytest.raises(ValueError, match="`closure_ms`"):
        egg_from_instants([0.002], [0.006], [1.0], 80, 1e4, closure_ms=0.0)


@pytest.mark.parametrize("pred, egg, w, match", [
    (torch.zeros(2, 1), torch.ones(2, 1), 10.0, "`pred`"),  # no first difference: was NaN
    (torch.zeros(2, 4), torch.ones(2, 4), math.nan, "`deriv_weight`"),  # was 1.0, the weight dropped
    (torch.zeros(2, 4), torch.ones(2, 4), -1.0, "`deriv_weight`"),
    (torch.zeros(2, 4), torch.ones(2, 5), 1.0, "`egg`"),  # shape mismatch: was a RuntimeError
    (torch.zeros(0, 4), torch.ones(0, 4), 1.0, "`pred`"),  # empty: was NaN
    (torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4), 1.0, "`pred`"),
    ([0.0, 1.0], torch.ones(2), 1.0, "`pred`"),
])
def test_egg_loss_refuses_bad_input(pred, egg, w, match):
    with pytest.raises((ValueError, TypeError), match=match):
        egg_loss(pred, egg, w)


def test_egg_loss_by_hand_and_with_length_one_frames_without_the_derivative():
    pred, egg = torch.tensor([[0.0, 1.0, 3.0]]), torch.tensor([[1.0, 1.0, 1.0]])
    assert float(egg_loss(pred, egg, 2.0)) == pytest.approx((1 + 0 + 4) / 3 + 2 * (0 + 1 + 4) / 2 * 2 / 2)
    assert float(egg_loss(torch.zeros(3, 1), torch.ones(3, 1), 0.0)) == 1.0
    half = egg_loss(pred.half(), egg.half(), 2.0)  # accumulated in float32
    assert half.dtype == torch.float32 and float(half) == pytest.approx(float(egg_loss(pred, egg, 2.0)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(duration=1e7), "`duration`"),  # was a hang
    (dict(duration=math.nan), "`duration`"),  # was "cannot convert float NaN to integer"
    (dict(duration=math.inf), "`duration`"),
    (dict(duration=1e-4), "`duration`"),  # no whole glottal cycle: was a division by zero
    (dict(duration=0.1, sample_rate=1e12), "`sample_rate`"),
    (dict(duration=0.1, seed="x"), "`seed`"),
    (dict(duration=0.1, f0=math.nan), "`f0`"),
])
def test_synthesize_refuses_unbounded_or_undefined_requests(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        synthesize(**kwargs)


@pytest.mark.parametrize("args, kwargs, match", [
    ((1e9, 16000.0), dict(f0=100.0), "`duration`"),  # was a hang
    ((math.nan, 16000.0), dict(f0=100.0), "`duration`"),
    ((0.1, 16000.0), dict(f0=100.0, rate_hz=math.nan), "`rate_hz`"),  # NaN periods: was an endless loop
    ((0.1, 16000.0), dict(f0=100.0, jitter="x"), "`jitter`"),
    ((0.1, -1.0), dict(f0=100.0), "`sample_rate`"),
    ((0.1, 16000.0), dict(f0=100.0, rng=3), "`rng`"),
])
def test_pitch_marks_refuses_unbounded_or_undefined_requests(args, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        pitch_marks(*args, **kwargs)


def test_read_wav_names_a_file_that_is_not_a_wav(tmp_path):
    for content in (b"not a wav file at all", b""):
        p = tmp_path / "x.wav"
        p.write_bytes(content)
        with pytest.raises(ValueError, match="`path`"):
            read_wav(p)
    good = write_wav(tmp_path / "g.wav", np.zeros(100), sample_rate=8000)
    (tmp_path / "t.wav").write_bytes(good.read_bytes()[:-51])  # the header promises more frames than remain
    with pytest.raises(ValueError, match="`path`"):
        read_wav(tmp_path / "t.wav")
    with pytest.raises(TypeError, match="`path`"):
        read_wav(3)


def test_overlap_add_refuses_bad_hops_and_lengths():
    with pytest.raises(ValueError, match="`hop`"):
        overlap_add(torch.ones(3, 4), 0, 5)  # was a silently wrong (4,) signal
    with pytest.raises(ValueError, match="`hop`"):
        overlap_add(torch.ones(3, 4), 5, 14)  # gaps between frames: 0 / 0
    with pytest.raises(ValueError, match="`length`"):
        overlap_add(torch.ones(3, 4), 2, 9)  # longer than the frames cover
    with pytest.raises(ValueError, match="`frames`"):
        overlap_add(torch.ones(0, 4), 2, 0)
    with pytest.raises(TypeError, match="`frames`"):
        overlap_add([[1.0, 2.0]], 1, 2)
    with pytest.raises(ValueError, match="`window`"):
        overlap_add(torch.ones(3, 4), 2, 8, window=torch.tensor([1.0, math.inf, 1.0, 1.0]))


def test_normalize_speech_is_exact_at_large_levels_and_refuses_integers():
    x = torch.tensor([3e30, -4e30, 0.0])
    y = normalize_speech(x)  # squaring 4e30 overflows float32: was all zeros
    assert torch.allclose(y.double(), x.double() / (25e60 / 3) ** 0.5)
    with pytest.raises(TypeError, match="`x`"):
        normalize_speech(torch.ones(3, dtype=torch.long))


@pytest.mark.parametrize("kwargs, match", [
    (dict(f0_max=40.0, f0_min=50.0), "`f0_max`"),
    (dict(f0_max=40.0, f0_min=50.0, period_fraction=0.5), "`f0_max`"),
    (dict(threshold="x"), "`threshold`"),
    (dict(local_s=math.inf), "`local_s`"),
])
def test_detect_egg_instants_refuses_bad_options(kwargs, match):
    egg = np.tile(np.r_[np.zeros(40), np.ones(40)], 3)
    with pytest.raises((ValueError, TypeError), match=match):
        detect_egg_instants(egg, 8000.0, **kwargs)


def test_detect_egg_instants_refuses_complex_input():
    egg = np.tile(np.r_[np.zeros(40), np.ones(40)], 3)
    with pytest.raises(TypeError, match="`egg`"):
        detect_egg_instants(egg * 1j, 8000.0)  # the imaginary EGG was read as all zeros


def test_speech_to_egg_predict_before_training_is_refused():
    rng = np.random.default_rng(0)
    cfg = SpeechToEGGConfig(frame_len=32, hop=8, hidden=4, layers=2, decoder_layers=1, ae_steps=1,
                            engine=EngineConfig(max_steps=2, progress=False, tensorboard=False))
    m = SpeechToEGGTrainer(rng.standard_normal(200), rng.standard_normal(200), config=cfg)
    with pytest.raises(ValueError, match="`fit`"):
        m.predict(rng.standard_normal(100))  # untrained encoder and decoder: was a made-up EGG
