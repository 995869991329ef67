"""Issue 26 section 4: bad input to MDLM and DiDi-Instruct's pieces gives a correct value or a clear error.

Each test is one repro from the issue (silent NaN/inf, wrong values accepted, unrelated tracebacks, hangs).
"""

from __future__ import annotations

import math

import pytest
import torch

from divmin.diffusion import (MaskedDiffusionLM, MDLMTransformer, group_normalize, mdlm_loss, mdlm_reverse_step,
                              mdlm_sample, path_log_prob, sample_times, subs_log_probs)

V, L = 3, 4


def _uniform(z, t):
    return subs_log_probs(torch.zeros(*z.shape, V + 1), z, mask_id=V)


def _net():
    torch.manual_seed(0)
    return MDLMTransformer(V, L, width=16, depth=1, heads=2)


def test_group_normalize_keeps_float64_rewards_beyond_float32():
    r = torch.tensor([1e39, 0.0, 2e39, 1e39], dtype=torch.float64)
    out = group_normalize(r, 2)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64))
    # squares overflow float64 here: scaled per group, still +-1
    torch.testing.assert_close(group_normalize(torch.tensor([1e300, -1e300], dtype=torch.float64), 2),
                               torch.tensor([1.0, -1.0], dtype=torch.float64))


@pytest.mark.parametrize("kwargs, match", [(dict(eps=0.0), "`eps`"), (dict(clip=-1.0), "`clip`"),
                                           (dict(clip=math.nan), "`clip`")])
def test_group_normalize_refuses_bad_knobs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        group_normalize(torch.tensor([1.0, 2.0]), 2, **kwargs)


def test_group_normalize_refuses_non_finite_and_integer_rewards():
    with pytest.raises(ValueError, match="`rewards`"):
        group_normalize(torch.tensor([1.0, math.inf]), 2)
    with pytest.raises(TypeError, match="`rewards`"):
        group_normalize(torch.tensor([1, 2]), 2)


def test_mdlm_loss_with_nothing_masked_is_zero_at_any_t():
    lp = subs_log_probs(torch.zeros(2, L, V + 1), torch.tensor([[0, 1, 2, 0]] * 2), mask_id=V)
    x0 = torch.tensor([[0, 1, 2, 0]] * 2)
    out = mdlm_loss(lp, x0, x0, torch.tensor([0.0, 0.5]), mask_id=V)
    assert torch.equal(out, torch.zeros(2))


def test_mdlm_loss_refuses_a_masked_position_at_t_zero():
    z = torch.tensor([[V, 1, 2, 0]])
    with pytest.raises(ValueError, match="`t`"):
        mdlm_loss(_uniform(z, None), torch.tensor([[0, 1, 2, 0]]), z, torch.tensor([0.0]), mask_id=V)


def test_mdlm_loss_refuses_mask_in_x0():
    z = torch.full((1, L), V)
    with pytest.raises(ValueError, match="`x0` holds the mask id"):
        mdlm_loss(_uniform(z, None), torch.tensor([[V, 1, 2, 0]]), z, torch.tensor([0.5]), mask_id=V)


@pytest.mark.parametrize("t", [torch.tensor([-0.5]), torch.tensor([1.5]), torch.tensor([math.nan]),
                               torch.tensor([0.5, 0.2, 0.3])])
def test_mdlm_loss_refuses_t_out_of_range_or_shape(t):
    z = torch.full((1, L), V)
    with pytest.raises(ValueError, match="`t`"):
        mdlm_loss(_uniform(z, None), torch.tensor([[0, 1, 2, 0]]), z, t, mask_id=V)


def test_mdlm_loss_refuses_ids_beyond_the_vocabulary_and_inconsistent_z_t():
    z = torch.full((1, L), V)
    with pytest.raises(ValueError, match="`x0`"):
        mdlm_loss(_uniform(z, None), torch.tensor([[7, 1, 2, 0]]), z, torch.tensor([0.5]), mask_id=V)
    with pytest.raises(ValueError, match="`z_t` must equal `x0`"):
        z2 = torch.tensor([[V, 2, 2, 0]])
        mdlm_loss(_uniform(z2, None), torch.tensor([[0, 1, 2, 0]]), z2, torch.tensor([0.5]), mask_id=V)
    with pytest.raises(ValueError, match="`log_probs`"):
        mdlm_loss(torch.zeros(1, L, V), torch.tensor([[0, 1, 2, 0]]), z, torch.tensor([0.5]), mask_id=V)


def test_mdlm_sample_stops_on_a_nan_denoiser():
    with pytest.raises(ValueError, match="`denoiser`"):
        mdlm_sample(lambda z, t: torch.full((*z.shape, V + 1), math.nan), 2, L, mask_id=V, nfe=2)


def test_mdlm_reverse_step_refuses_nan_log_probs():
    z = torch.full((1, 2), V)
    with pytest.raises(ValueError, match="`log_probs`"):
        mdlm_reverse_step(torch.full((1, 2, V + 1), math.nan), z, 1.0, 0.0, mask_id=V)


@pytest.mark.parametrize("kwargs, match", [(dict(length=-3), "`length`"), (dict(length=0), "`length`"),
                                           (dict(nfe=10**9), "`nfe`"), (dict(nfe=True), "`nfe`")])
def test_mdlm_sample_refuses_bad_sizes_without_work(kwargs, match):
    args = dict(length=L, nfe=2) | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        mdlm_sample(_uniform, 2, args.pop("length"), mask_id=V, **args)


def test_mdlm_sample_bounds_explicit_time_grids():
    with pytest.raises(ValueError, match="`times"):
        mdlm_sample(_uniform, 1, L, mask_id=V, times=[1.0, math.nan, 0.0])


def test_sample_times_refuses_negative_n():
    with pytest.raises(ValueError, match="`n`"):
        sample_times(-1)
    assert sample_times(0).shape == (0,)


def test_transformer_refuses_long_sequences_and_unknown_ids():
    net = _net()
    with pytest.raises(ValueError, match="`z_t`.*longer"):
        net(torch.zeros(1, L + 2, dtype=torch.long), torch.ones(1))
    with pytest.raises(ValueError, match="`z_t` holds unknown token ids"):
        net(torch.full((1, 3), V + 5), torch.ones(1))
    with pytest.raises(ValueError, match="`t`"):
        net(torch.zeros(2, L, dtype=torch.long), torch.ones(3))


def test_masked_diffusion_lm_and_subs_refuse_unknown_ids():
    lm = MaskedDiffusionLM(_net(), V, L)
    with pytest.raises(ValueError, match="`t`"):
        lm(torch.zeros(1, L, dtype=torch.long), torch.tensor([2.0]))
    with pytest.raises(ValueError, match="`t`"):
        lm.noise(torch.zeros(2, L, dtype=torch.long), torch.ones(3))
    with pytest.raises(ValueError, match="`z_t` holds unknown token ids"):
        subs_log_probs(torch.zeros(1, 2, V + 1), torch.tensor([[7, 1]]), mask_id=V)


def test_path_log_prob_refuses_increasing_times_and_broken_paths():
    start, end = torch.full((1, 2), V), torch.tensor([[0, 1]])
    with pytest.raises(ValueError, match="`times`"):
        path_log_prob(_uniform, [start, end], [0.0, 1.0], mask_id=V)
    with pytest.raises(ValueError, match="`states\\[2\\]`"):  # a token unmasked at step 1 changes at step 2
        path_log_prob(_uniform, [start, torch.tensor([[0, V]]), torch.tensor([[1, 1]])], [1.0, 0.5, 0.0], mask_id=V)
    # the good path: two tokens drawn uniformly over V at one step
    out = path_log_prob(_uniform, [start, end], [1.0, 0.0], mask_id=V)
    torch.testing.assert_close(out, torch.tensor([2 * math.log(1 / V)]))
