"""The public signal checks that eval and speech share: real_array and mono_signal (errors name the argument)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from divmin.eval import mono_signal, real_array


def test_real_array_reads_tensors_of_any_real_dtype_and_refuses_complex():
    x = torch.tensor([0.5, -0.25], dtype=torch.bfloat16)
    np.testing.assert_array_equal(real_array(x, "x"), np.array([0.5, -0.25]))
    assert real_array([1, 2], "x").dtype == np.float64
    with pytest.raises(TypeError, match="`z` must be real"):
        real_array(np.array([1 + 1j]), "z")
    with pytest.raises(TypeError, match="`w` must be an array of real numbers"):
        real_array(["a"], "w")


def test_mono_signal_checks_shape_finiteness_and_an_optional_bound():
    np.testing.assert_array_equal(mono_signal([1.5, -2.0], "egg"), np.array([1.5, -2.0]))  # no bound
    with pytest.raises(ValueError, match=r"`speech` must be finite and within \[-1, 1\]; scale it first"):
        mono_signal([1.5, 0.0], "speech", bound=1.0)
    with pytest.raises(ValueError, match=r"`speech` must be finite and within"):
        mono_signal([np.nan, 0.0], "speech", bound=1.0)
    with pytest.raises(ValueError, match="`egg` must be finite"):
        mono_signal([np.inf], "egg")
    with pytest.raises(ValueError, match=r"`egg` must be mono \(1-D\)"):
        mono_signal(np.zeros((2, 2)), "egg")
    with pytest.raises(ValueError, match="`egg` must not be empty"):
        mono_signal([], "egg")


def test_write_wav_refuses_samples_outside_the_pcm_range(tmp_path):
    from divmin.speech import write_wav

    with pytest.raises(ValueError, match=r"`egg` must be finite and within \[-1, 1\]"):
        write_wav(tmp_path / "x.wav", np.zeros(4), sample_rate=8000, egg=np.full(4, 1.5))
