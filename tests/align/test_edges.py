"""Bad and extreme inputs of the alignment losses and targets: a correct value or an error naming the argument."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from divmin.align import EnergyTarget, PointwiseConstraint, RewardTilt, fdpg_loss, fdpo_loss

LP = torch.tensor([-1.0, -2.0])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(policy_logps=torch.tensor([-1, -2])), TypeError, "`policy_logps` must have a floating dtype"),
        (dict(policy_logps=torch.zeros(0), target_log_scores=torch.zeros(0)), ValueError, "`policy_logps` is empty"),
        (dict(target_log_scores=torch.tensor([0.0, math.nan])), ValueError, "`target_log_scores` contains NaN"),
        (dict(target_log_scores=torch.tensor([0.0, math.inf])), ValueError, "`target_log_scores` contains \\+inf"),
        (dict(baseline=math.inf), ValueError, "`baseline` must be finite"),
        (dict(log_z=torch.tensor(math.nan)), ValueError, "`log_z` contains NaN"),
        (dict(policy_logps=torch.tensor([-1.0, math.nan])), ValueError, "`policy_logps` contains NaN"),
    ],
)
def test_fdpg_loss_refuses_bad_input_by_name(kwargs, error, match):
    args = dict(policy_logps=LP.clone().requires_grad_(True), target_log_scores=torch.zeros(2)) | kwargs
    with pytest.raises(error, match=match):
        fdpg_loss(args.pop("policy_logps"), args.pop("target_log_scores"), divergence="js", **args)


def test_fdpg_sample_impossible_under_the_policy_but_drawn_from_a_proposal_has_zero_gradient():
    logps = torch.tensor([-1.0, -math.inf, -2.0], requires_grad=True)
    out = fdpg_loss(logps, torch.zeros(3), divergence="js", proposal_logps=torch.full((3,), -1.0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(logps.grad).all() and logps.grad[1] == 0


def test_fdpg_on_policy_sample_of_probability_zero_is_a_clear_error():
    logps = torch.tensor([-1.0, -math.inf], requires_grad=True)
    with pytest.raises(ValueError, match="`model_logps` = -inf"):
        fdpg_loss(logps, torch.zeros(2), divergence="js", log_z=0.0)


def test_fdpg_takes_numpy_numbers():
    out = fdpg_loss(LP.clone().requires_grad_(True), torch.zeros(2), divergence="js", log_z=np.float32(0.0),
                    baseline=np.float64(0.1))
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(beta=True), TypeError, "`beta` must be a real number"),
        (dict(beta=0.0), ValueError, "`beta` must be > 0"),
        (dict(label_smoothing=0.5), ValueError, "`label_smoothing`"),
        (dict(empty=True), ValueError, "`policy_chosen_logps` is empty"),
        (dict(plus_inf=True), ValueError, "`policy_chosen_logps` contains NaN or \\+inf"),
    ],
)
def test_fdpo_loss_refuses_bad_input_by_name(change, error, match):
    chosen = torch.zeros(0) if change.pop("empty", False) else LP.clone()
    if change.pop("plus_inf", False):
        chosen = torch.tensor([math.inf, -1.0])
    other = torch.zeros_like(chosen) - 1
    with pytest.raises(error, match=match):
        fdpo_loss(chosen, other, other, other, **change)


def test_fdpo_accepts_numpy_beta_and_equals_the_float_one():
    a, b = fdpo_loss(LP, LP - 1, LP, LP, beta=np.float32(0.25)), fdpo_loss(LP, LP - 1, LP, LP, beta=0.25)
    assert torch.equal(a.loss, b.loss)


@pytest.mark.parametrize("epsilon", [math.nan, -0.1, math.inf])
def test_pointwise_constraint_epsilon_is_validated(epsilon):
    with pytest.raises(ValueError, match="`epsilon`"):
        PointwiseConstraint(lambda s: s, epsilon=epsilon)


def test_reward_tilt_beta_is_validated():
    with pytest.raises(ValueError, match="`beta`"):
        RewardTilt(lambda s: s, beta=math.nan)


def test_a_factor_returning_one_value_for_three_samples_is_refused_not_broadcast():
    target = EnergyTarget(None, [lambda samples: torch.tensor([0.5])])
    with pytest.raises(ValueError, match="one value per sample, got shape \\(1,\\)"):
        target.log_score(torch.zeros(3, 4), torch.zeros(3))
