"""Naylor's GCI measures and dEGG instant detection against hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from divmin.eval import detect_egg_instants, gci_metrics

REF = np.arange(1, 11) * 0.01  # ten instants, 10 ms apart


def test_perfect_detection():
    m = gci_metrics(REF, REF.copy())
    assert (m.idr, m.mr, m.far, m.ida_ms, m.bias_ms, m.n_cycles) == (1.0, 0.0, 0.0, 0.0, 0.0, 10)


def test_one_miss():
    m = gci_metrics(REF, np.delete(REF, 3))
    assert (m.idr, m.mr, m.far) == pytest.approx((0.9, 0.1, 0.0))


def test_one_false_alarm_and_two_estimates_in_one_cycle():
    est = np.sort(np.r_[REF, REF[4] + 0.003])  # a second estimate inside cycle 4
    m = gci_metrics(REF, est)
    assert (m.idr, m.mr, m.far) == pytest.approx((0.9, 0.0, 0.1))
    # an estimate just past the cycle boundary (5 ms after) belongs to the next cycle
    m = gci_metrics(REF, np.sort(np.r_[REF[:4], REF[4] + 0.0051, REF[5:]]))
    assert (m.idr, m.mr, m.far) == pytest.approx((0.8, 0.1, 0.1))


def test_shifted_instant_gives_known_ida():
    shift = np.zeros(10)
    shift[2], shift[7] = 0.001, -0.0005  # +1 ms and -0.5 ms
    m = gci_metrics(REF, REF + shift)
    errors_ms = shift * 1e3
    assert m.idr == 1.0
    assert m.ida_ms == pytest.approx(float(np.std(errors_ms)), abs=1e-9)
    assert m.ida_ms == pytest.approx(np.sqrt((1 + 0.25) / 10 - (0.5 / 10) ** 2), abs=1e-9)
    assert m.bias_ms == pytest.approx(0.05, abs=1e-9)


def test_samples_with_sample_rate_and_edges():
    m = gci_metrics(torch.tensor([100, 200, 300]), [100, 210, 351], sample_rate=1000.0)
    # last cycle is mirrored: (250, 350] so 351 is outside (ignored) -> a miss
    assert (m.idr, m.mr, m.far) == pytest.approx((2 / 3, 1 / 3, 0.0))
    assert m.ida_ms == pytest.approx(5.0)  # errors 0 and 10 ms


@pytest.mark.parametrize("kwargs, name", [
    (dict(reference_instants=[0.02, 0.01], estimated_instants=[0.01]), "reference_instants"),
    (dict(reference_instants=[0.01, 0.02], estimated_instants=[0.02, 0.01]), "estimated_instants"),
    (dict(reference_instants=[], estimated_instants=[0.01]), "reference_instants"),
    (dict(reference_instants=[0.01, 0.02], estimated_instants=[0.01], sample_rate=-8000.0), "sample_rate"),
])
def test_bad_input_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        gci_metrics(**kwargs)


def test_detect_egg_instants_on_square_contact():
    fs = 8000.0
    egg = np.tile(np.r_[np.zeros(30), np.linspace(0, 1, 5), np.ones(25), np.linspace(1, 0, 20)], 4)
    inst = detect_egg_instants(egg, fs)
    period = 80
    # closure ramp over samples 30..34 (dEGG plateau centre 32), opening ramp over 60..79
    assert np.allclose(inst.gci * fs, np.arange(4) * period + 32, atol=1)
    goi = inst.goi * fs - np.arange(4) * period
    assert np.all((goi >= 60) & (goi <= 79))
    assert np.all(inst.goi > inst.gci)
    # inverted polarity: closures are now where the openings were
    flipped = detect_egg_instants(-egg, fs)
    assert abs(flipped.gci[0] * fs - 60) < 12


def test_detect_egg_instants_bad_input():
    with pytest.raises(ValueError, match="egg"):
        detect_egg_instants(np.zeros((2, 100)), 8000.0)
    with pytest.raises(ValueError, match="egg"):
        detect_egg_instants(np.zeros(0), 8000.0)
    with pytest.raises(ValueError, match="sample_rate"):
        detect_egg_instants(np.zeros(10), 0)


def _square(period_amps, bump: float = 0.0) -> np.ndarray:
    """Cycles of 80 samples: closure ramp 30..34 to `a`, optional extra rise `bump` at 50..52, opening 60..79."""
    cycles = []
    for a in period_amps:
        c = np.r_[np.zeros(30), np.linspace(0, a, 5), np.full(15, a), np.linspace(a, a + bump, 3), np.full(7, a + bump),
                  np.linspace(a + bump, 0, 20)]
        cycles.append(c)
    return np.concatenate(cycles)


def test_period_fraction_removes_a_second_peak_in_one_cycle():
    fs = 8000.0
    egg = _square([1.0] * 5, bump=0.3)  # the bump's dEGG peak is 0.15 / 0.25 = 60 % of the closure's
    plain = detect_egg_instants(egg, fs)
    assert len(plain.gci) == 10  # closure and bump in every cycle
    one = detect_egg_instants(egg, fs, period_fraction=0.5)
    assert np.allclose(one.gci * fs, np.arange(5) * 80 + 32, atol=1)


def test_local_threshold_follows_the_level_and_smoothing_keeps_the_peak():
    fs = 8000.0
    egg = _square([1.0, 1.0, 0.2, 0.2, 0.2])  # weak cycles: dEGG peaks at 20 % of the strong ones
    assert len(detect_egg_instants(egg, fs).gci) == 2
    local = detect_egg_instants(egg, fs, local_s=0.015)  # 120 samples: 1.5 periods
    assert np.allclose(local.gci * fs, np.arange(5) * 80 + 32, atol=1)
    smooth = detect_egg_instants(_square([1.0] * 3), fs, smooth_ms=1.0)  # symmetric window: no shift
    assert np.allclose(smooth.gci * fs, np.arange(3) * 80 + 32, atol=1)


@pytest.mark.parametrize("kwargs, name", [(dict(period_fraction=1.5), "period_fraction"),
                                          (dict(smooth_ms=-1.0), "smooth_ms"), (dict(local_s=0.0), "local_s"),
                                          (dict(period_fraction=0.5, f0_min=0), "f0_min")])
def test_detect_options_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        detect_egg_instants(_square([1.0] * 3), 8000.0, **kwargs)
