"""Self-normalised log Z: exact on an enumerated space, consistent under sampling, running per context."""

from __future__ import annotations

import json
import math

import pytest
import torch

from divmin.estimators import LogZEstimator, self_normalized_log_z

K = 40  # points of the enumerated space


def _target(seed: int, dead: int = 5) -> torch.Tensor:
    """(K,) unnormalised log-scores; the first ``dead`` points have no mass (a hard constraint)."""
    s = 2.0 * torch.randn(K, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    s[:dead] = -math.inf
    return s


def _proposal(seed: int) -> torch.Tensor:
    return torch.log_softmax(torch.randn(K, generator=torch.Generator().manual_seed(100 + seed),
                                         dtype=torch.float64), 0)


def _sample(log_prop: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    return torch.multinomial(log_prop.exp(), n, replacement=True, generator=torch.Generator().manual_seed(seed))


def _standard_error(s: torch.Tensor, log_prop: torch.Tensor, n: int) -> float:
    """Delta-method sd of log mean_i w_i, w = exp(s) / q, from the exact Var_q[w] (enumeration)."""
    z = s.exp().sum()
    var_w = (torch.exp(2 * s - log_prop)).sum() - z ** 2  # E_q[w^2] - Z^2
    return float(var_w.sqrt() / z / math.sqrt(n))


def test_exact_on_the_enumerated_space_under_a_uniform_proposal():
    s = _target(0)
    uniform = torch.full((K,), -math.log(K), dtype=torch.float64)
    torch.testing.assert_close(self_normalized_log_z(s, uniform), torch.logsumexp(s, 0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_converges_under_sampling_from_a_non_uniform_proposal(seed):
    s, log_prop, n = _target(seed), _proposal(seed), 200_000
    x = _sample(log_prop, n, seed)
    est = float(self_normalized_log_z(s[x], log_prop[x]))
    exact, sd = float(torch.logsumexp(s, 0)), _standard_error(s, log_prop, n)
    assert abs(est - exact) < 5 * sd and sd < 0.02, (est, exact, sd)


def test_stays_in_log_space_where_exp_overflows_fp32():
    s = (_target(2) + 900.0).float()  # exp(900) overflows even float64
    log_prop = _proposal(2).float() - 300.0  # an unnormalised proposal shifts log Z by +300
    uniform = torch.full((K,), -math.log(K)) - 300.0
    assert not torch.isfinite(torch.exp(s - uniform).mean())  # the naive estimate overflows
    got = self_normalized_log_z(s, uniform)
    assert got.dtype == torch.float64 and torch.isfinite(got)
    want = torch.logsumexp(s.double(), 0) - math.log(K) - uniform.double()[0]  # Z of the given fp32 inputs
    torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-10)
    assert torch.isfinite(self_normalized_log_z(s, log_prop))


def test_gradient_is_the_self_normalised_weights():
    s, log_prop = _target(3).requires_grad_(), _proposal(3)
    (grad,) = torch.autograd.grad(self_normalized_log_z(s, log_prop), [s])
    # d/ds_i log mean_j exp(s_j - log q_j) = softmax(s - log q)_i
    torch.testing.assert_close(grad, torch.softmax(s.detach() - log_prop, 0))


def test_bad_input_raises_naming_the_problem():
    with pytest.raises(ValueError, match="no sample has finite mass"):
        self_normalized_log_z(torch.full((3,), -math.inf), torch.zeros(3))
    with pytest.raises(ValueError, match="infinite or NaN"):
        self_normalized_log_z(torch.tensor([0.0, math.inf]), torch.zeros(2))
    with pytest.raises(ValueError, match="infinite or NaN"):
        self_normalized_log_z(torch.tensor([0.0, math.nan]), torch.zeros(2))
    with pytest.raises(ValueError, match="same shape"):
        self_normalized_log_z(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="proposal_logps"):
        self_normalized_log_z(torch.zeros(2), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="non-empty"):
        self_normalized_log_z(torch.zeros(0), torch.zeros(0))
    with pytest.raises(TypeError, match="target_log_scores"):
        self_normalized_log_z([0.0, 1.0], torch.zeros(2))


def test_running_estimate_equals_the_one_shot_estimate_of_every_sample_per_key():
    targets, log_prop = {"a": _target(4), "b": _target(5, dead=30)}, _proposal(4)
    est, seen = LogZEstimator(), {"a": [], "b": []}
    for step in range(3):
        x = _sample(log_prop, 64, step)
        keys = ["a", "b"] * 32
        scores = torch.stack([targets[k][i] for k, i in zip(keys, x)])
        out = est.update(scores, log_prop[x], keys)
        for k, i in zip(keys, x):
            seen[k].append(i)
        # oracle: the one-batch estimate over everything seen so far under that key
        for k in ("a", "b"):
            xs = torch.stack(seen[k])
            want = float(self_normalized_log_z(targets[k][xs], log_prop[xs]))
            assert est.log_z(k) == pytest.approx(want, abs=1e-12)
        assert out.dtype == torch.float32 and out[0] == pytest.approx(est.log_z("a"))
        assert out[1] == pytest.approx(est.log_z("b"))


def test_running_estimate_converges_per_context_and_checkpoints_exactly():
    targets, log_prop = {"a": _target(6), "b": _target(7, dead=20)}, _proposal(6)
    est = LogZEstimator()
    for step in range(40):  # 20000 samples per key
        x = _sample(log_prop, 1000, 10 + step)
        keys = ["a"] * 500 + ["b"] * 500
        scores = torch.cat([targets["a"][x[:500]], targets["b"][x[500:]]])
        est.update(scores, log_prop[x], keys)
    for k, s in targets.items():
        exact, sd = float(torch.logsumexp(s, 0)), _standard_error(s, log_prop, 20_000)
        assert abs(est.log_z(k) - exact) < 5 * sd, (k, est.log_z(k), exact, sd)
    restored = LogZEstimator()
    restored.load_state_dict(json.loads(json.dumps(est.state_dict())))  # JSON-able
    x = _sample(log_prop, 10, 99)
    assert torch.equal(restored.update(targets["a"][x], log_prop[x], ["a"] * 10),
                       est.update(targets["a"][x], log_prop[x], ["a"] * 10))


def test_running_estimate_rejects_bad_keys():
    est = LogZEstimator()
    with pytest.raises(KeyError, match="no sample"):
        est.log_z("unseen")
    with pytest.raises(ValueError, match="keys"):
        est.update(torch.zeros(3), torch.zeros(3), ["a"])
    est.update(torch.zeros(1), torch.zeros(1), [("a", 1)])
    with pytest.raises(TypeError, match="str keys"):
        est.state_dict()
