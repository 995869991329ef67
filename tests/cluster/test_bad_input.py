"""Issue 26 section 4, DEPICT: each bad input gets a correct value or an error naming the argument."""

import math

import pytest
import torch

from divmin.cluster import (TARGET_RULES, DepictConfig, DepictNet, DepictTrainer, auxiliary_target, depict_loss,
                            kmeans_init_head)
from divmin.engine import EngineConfig

# float32 softmax underflows to an exact 0 past a logit gap of ~104: cluster 2 is then empty
EMPTY_CLUSTER = torch.softmax(torch.tensor([[200.0, 0, 0], [0, 200.0, 0], [150.0, 1.0, 0.0]]), -1)


@pytest.mark.parametrize("rule", sorted(TARGET_RULES))
def test_auxiliary_target_of_an_empty_cluster_is_zero_there_and_finite_elsewhere(rule):
    q = EMPTY_CLUSTER
    assert float(q[:, 2].max()) == 0.0  # the premise: an exactly empty column
    p = auxiliary_target(q, rule=rule)
    assert torch.isfinite(p).all()
    assert torch.equal(p == 0, q == 0)
    assert torch.allclose(p.sum(1), torch.ones(3))
    # oracle: the same rule on the two non-empty clusters alone, in float64
    sub = q[:, :2].double()
    sub = sub / sub.sum(1, keepdim=True)
    log_f = sub.sum(0).log()
    ref = torch.softmax(TARGET_RULES.get(rule)(sub.log(), log_f), -1)
    assert torch.allclose(p[:, :2].double(), ref, atol=1e-6)


def test_auxiliary_target_keeps_a_depict_loss_finite():
    p = auxiliary_target(EMPTY_CLUSTER, rule="dec")
    loss = depict_loss(torch.zeros(3, 3, requires_grad=True), p)
    assert torch.isfinite(loss)
    loss.backward()


@pytest.mark.parametrize("q, match", [
    (torch.tensor([[-0.5, 1.5], [0.5, 0.5]]), "`q`"),  # negative "probability"
    (torch.tensor([[math.nan, 1.0], [0.5, 0.5]]), "`q`"),
    (torch.tensor([[0.7, 0.7], [0.5, 0.5]]), "`q`"),  # a row summing to 1.4
    (torch.tensor([[0, 1], [1, 0]]), "`q`"),  # integers
    ([[0.5, 0.5]], "`q`"),
    (torch.full((2, 1), 1.0), "`q`"),  # K = 1
])
def test_auxiliary_target_refuses_what_is_not_a_probability_table(q, match):
    with pytest.raises((ValueError, TypeError), match=match):
        auxiliary_target(q)


def test_auxiliary_target_refuses_an_unknown_rule():
    with pytest.raises(ValueError, match="`rule`"):
        auxiliary_target(torch.full((2, 2), 0.5), rule="nope")


@pytest.mark.parametrize("target", [
    torch.tensor([[1.0, 1.0], [1.0, 1.0]]),  # rows summing to 2: was a loss of exactly 0.0
    torch.tensor([[-0.5, 1.5], [0.5, 0.5]]),
    torch.tensor([[math.inf, 0.0], [0.5, 0.5]]),
])
def test_depict_loss_refuses_a_target_that_is_not_a_distribution(target):
    with pytest.raises(ValueError, match="`target`"):
        depict_loss(torch.zeros(2, 2), target)


def test_depict_loss_refuses_bad_logits_and_options():
    t = torch.full((2, 2), 0.5)
    with pytest.raises(TypeError, match="`model_logits`"):
        depict_loss([[0.0, 0.0]], t)
    with pytest.raises(TypeError, match="`model_logits`"):
        depict_loss(torch.zeros(2, 2, dtype=torch.long), t)
    with pytest.raises(ValueError, match="`model_logits`"):
        depict_loss(torch.zeros(2, 3), t)
    with pytest.raises(TypeError, match="`prior`"):
        depict_loss(torch.zeros(2, 2), t, prior="yes")


@pytest.mark.parametrize("k", [1, 0, -3])
def test_depictnet_needs_two_clusters(k):
    with pytest.raises(ValueError, match="`n_clusters`"):
        DepictNet((1, 8, 8), n_clusters=k)


def test_depictnet_refuses_bad_sizes_and_inputs():
    with pytest.raises(TypeError, match="`n_clusters`"):
        DepictNet((1, 8, 8), n_clusters=2.5)
    with pytest.raises(ValueError, match="`embed_dim`"):
        DepictNet((1, 8, 8), n_clusters=2, embed_dim=0)
    with pytest.raises(ValueError, match="`noise`"):
        DepictNet((1, 8, 8), n_clusters=2, noise=1.5)
    with pytest.raises(ValueError, match="`in_shape`"):
        DepictNet((8, 8), n_clusters=2)
    net = DepictNet((1, 8, 8), n_clusters=2, channels=(4,))
    with pytest.raises(ValueError, match="`x`"):
        net(torch.zeros(2, 1, 4, 4))
    with pytest.raises(TypeError, match="`x`"):
        net.clean(torch.zeros(2, 1, 8, 8, dtype=torch.long))


def _blobs():
    torch.manual_seed(0)
    return torch.cat([torch.randn(5, 2), torch.randn(5, 2) + 8])


@pytest.mark.parametrize("z, head, match", [
    (torch.tensor([[math.nan, 0.0], [1.0, 1.0], [2.0, 2.0]]), torch.nn.Linear(2, 2), "`z`"),
    (torch.rand(3, 2), torch.nn.Linear(2, 5), "`z`"),  # k > n
    (torch.rand(5), torch.nn.Linear(1, 2), "`z`"),  # 1-D
    (torch.rand(5, 3), torch.nn.Linear(2, 2), "`z`"),  # d differs from the head's input width
    (torch.ones(5, 2, dtype=torch.long), torch.nn.Linear(2, 2), "`z`"),
    (_blobs(), torch.nn.Conv1d(2, 2, 1), "`head`"),
])
def test_kmeans_init_head_refuses_bad_input(z, head, match):
    with pytest.raises((ValueError, TypeError), match=match):
        kmeans_init_head(head, z, n_init=1)


def test_kmeans_init_head_refuses_bad_options():
    with pytest.raises(ValueError, match="`n_init`"):
        kmeans_init_head(torch.nn.Linear(2, 2), _blobs(), n_init=0)
    with pytest.raises(TypeError, match="`seed`"):
        kmeans_init_head(torch.nn.Linear(2, 2), _blobs(), seed="x")


def test_trainer_predict_before_training_names_the_model():
    x = torch.rand(8, 1, 4, 4)
    tr = DepictTrainer(x, config=DepictConfig(n_clusters=2, channels=(2,), engine=EngineConfig(max_steps=2)))
    with pytest.raises(ValueError, match="`model`"):
        tr.predict()
