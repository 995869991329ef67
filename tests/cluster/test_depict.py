"""DEPICT: targets and loss by hand, gradients of a non-KL member, config errors, a tiny training run."""

import math

import pytest
import torch

from divmin.cluster import DepictConfig, DepictNet, DepictTrainer, auxiliary_target, depict_loss, kmeans_init_head
from divmin.engine import EngineConfig

Q = [[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]]


def hand_target(rule):
    f = [sum(row[k] for row in Q) for k in range(2)]  # soft frequencies 1.8, 1.2
    out = []
    for row in Q:
        s = [row[k] / math.sqrt(f[k]) if rule == "paper" else row[k] ** 2 / f[k] for k in range(2)]
        out.append([v / sum(s) for v in s])
    return out


@pytest.mark.parametrize("rule", ["paper", "dec"])
def test_target_matches_hand_computation(rule):
    p = auxiliary_target(torch.tensor(Q, dtype=torch.float64), rule=rule)
    assert torch.allclose(p, torch.tensor(hand_target(rule), dtype=torch.float64), atol=1e-12)


def test_first_row_of_paper_target_by_hand():
    a, b = 0.9 / math.sqrt(1.8), 0.1 / math.sqrt(1.2)
    p = auxiliary_target(torch.tensor(Q, dtype=torch.float64), rule="paper")
    assert float(p[0, 0]) == pytest.approx(a / (a + b), abs=1e-12)


def test_kl_loss_matches_hand_computation():
    logits = torch.tensor([[0.2, -0.3], [1.0, 0.5], [-1.0, 0.4]], dtype=torch.float64)
    p = hand_target("dec")
    q = torch.softmax(logits, -1).tolist()
    per_sample = sum(p[i][k] * math.log(p[i][k] / q[i][k]) for i in range(3) for k in range(2)) / 3
    pbar = [sum(p[i][k] for i in range(3)) / 3 for k in range(2)]
    prior = sum(v * math.log(v / 0.5) for v in pbar)
    tgt = torch.tensor(p, dtype=torch.float64)
    assert float(depict_loss(logits, tgt, prior=False)) == pytest.approx(per_sample, abs=1e-12)
    assert float(depict_loss(logits, tgt)) == pytest.approx(per_sample + prior, abs=1e-12)


def js_f(r):  # unscaled Jensen-Shannon generator
    return r * torch.log(r) - (r + 1) * torch.log((r + 1) / 2)


def test_js_gradient_matches_written_out_sum():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    target = auxiliary_target(torch.softmax(torch.randn(5, 4, dtype=torch.float64), -1), rule="dec")
    (g,) = torch.autograd.grad(depict_loss(logits, target, divergence="js"), logits)
    q = torch.softmax(logits, -1)
    pbar = target.mean(0)
    written = (q * js_f(target / q)).sum() / 5 + (0.25 * js_f(pbar / 0.25)).sum()
    (g_ref,) = torch.autograd.grad(written, logits)
    assert torch.allclose(g, g_ref, atol=1e-10)
    value = float(depict_loss(logits.detach(), target, divergence="js"))
    assert value == pytest.approx(float(written.detach()), abs=1e-10)
    assert g.abs().max() > 1e-3  # not trivially zero


def test_kmeans_init_head_is_nearest_centroid():
    torch.manual_seed(0)
    z = torch.cat([torch.randn(20, 3) + 6 * torch.eye(3)[k] for k in range(3)])
    head = torch.nn.Linear(3, 3)
    labels = kmeans_init_head(head, z, n_init=2)
    assert torch.equal(head(z).argmax(1), labels)
    assert len(set(labels.tolist())) == 3


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="n_clusters"):
        DepictConfig(n_clusters=1)
    with pytest.raises(ValueError, match="target"):
        DepictConfig(target="nope")
    with pytest.raises(ValueError, match="n_clusters"):
        DepictTrainer(torch.rand(3, 1, 8, 8), config=DepictConfig(n_clusters=4))
    with pytest.raises(ValueError, match="rule"):
        auxiliary_target(torch.full((2, 2), 0.5), rule="nope")
    with pytest.raises(ValueError, match="in_shape"):
        DepictNet((1, 6, 6), n_clusters=2)
    with pytest.raises(ValueError, match="divergence"):
        depict_loss(torch.zeros(2, 2), torch.full((2, 2), 0.5), divergence="sinkhorn")
    with pytest.raises(ValueError, match="divergence"):
        DepictConfig(divergence="sinkhorn")
    with pytest.raises(ValueError, match="model_logits"):
        depict_loss(torch.zeros(2, 3), torch.full((2, 2), 0.5))


def test_reconstruction_reaches_every_layer():
    net = DepictNet((1, 8, 8), n_clusters=2, channels=(4, 8), embed_dim=3)
    _, recon = net(torch.rand(4, 1, 8, 8))
    recon.backward()
    for name in ("convs.0.weight", "convs.1.weight", "embed.weight", "deconvs.0.weight", "deconvs.1.weight"):
        assert dict(net.named_parameters())[name].grad.abs().sum() > 0, name


def test_tiny_training_separates_two_blobs_and_stops():
    g = torch.Generator().manual_seed(0)
    a = torch.zeros(40, 1, 8, 8)
    a[:20, :, :4] = 1.0  # top half lit
    a[20:, :, 4:] = 1.0  # bottom half lit
    x = (a + 0.1 * torch.rand(40, 1, 8, 8, generator=g)).clamp(0, 1)
    cfg = DepictConfig(n_clusters=2, channels=(4, 8), embed_dim=4, pretrain_steps=10, update_interval=4, tol=0.01,
                       batch_size=20, kmeans_n_init=2,
                       engine=EngineConfig(max_steps=60, log_every=50, progress=False, tensorboard=False))
    tr = DepictTrainer(x, config=cfg)
    result = tr.fit()
    pred = tr.predict()
    assert result.stopped_early and result.step < 60
    assert len(set(pred[:20].tolist())) == 1 and len(set(pred[20:].tolist())) == 1 and pred[0] != pred[20]
