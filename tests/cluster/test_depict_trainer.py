"""DepictTrainer: DEC's Student-t head, starting from a pretrained autoencoder, exact resume."""

import pytest
import torch

from divmin.cluster import HEADS, DepictConfig, DepictNet, DepictTrainer, kmeans_init_head
from divmin.engine import EngineConfig

from .._resume import assert_resumes_exactly


def _two_blobs(n=40):
    g = torch.Generator().manual_seed(0)
    a = torch.zeros(n, 1, 8, 8)
    a[: n // 2, :, :4] = 1.0  # top half lit
    a[n // 2:, :, 4:] = 1.0  # bottom half lit
    return (a + 0.1 * torch.rand(n, 1, 8, 8, generator=g)).clamp(0, 1)


def _engine(steps, **kw):
    return EngineConfig(max_steps=steps, log_every=kw.pop("log_every", 50), progress=False, tensorboard=False, **kw)


def test_student_t_head_is_decs_kernel():
    torch.manual_seed(0)
    head = HEADS.get("student_t")(3, 4)
    z = torch.randn(5, 3, dtype=torch.float64)
    head = head.double().requires_grad_(False)
    q = torch.softmax(head(z), -1)
    kernel = torch.tensor([[1.0 / (1.0 + float(((z[i] - head.centroids[k]) ** 2).sum())) for k in range(4)]
                           for i in range(5)], dtype=torch.float64)
    torch.testing.assert_close(q, kernel / kernel.sum(1, keepdim=True), rtol=0, atol=1e-12)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_kmeans_init_of_each_head_reproduces_the_kmeans_labels(head):
    torch.manual_seed(0)
    z = torch.cat([torch.randn(20, 3) + 6 * torch.eye(3)[k] for k in range(3)])
    module = HEADS.get(head)(3, 3)
    labels = kmeans_init_head(module, z, n_init=2)
    assert torch.equal(module(z).argmax(1), labels)
    assert sorted(set(labels.tolist())) == [0, 1, 2]


def test_dec_path_is_the_clean_path_without_decoder():
    net = DepictNet((1, 8, 8), n_clusters=3, channels=(4,), embed_dim=3, noise=0.5, head="student_t")
    x = torch.rand(6, 1, 8, 8)
    logits, recon = net(x, reconstruct=False)
    torch.testing.assert_close(logits, net.clean(x)[1])
    assert float(recon) == 0.0
    with pytest.raises(ValueError, match="head"):
        DepictNet((1, 8, 8), n_clusters=3, head="gaussian")
    with pytest.raises(ValueError, match="head"):
        DepictConfig(head="gaussian")


def test_pretrained_backbone_is_copied_and_the_head_is_new():
    x = _two_blobs()
    cfg = DepictConfig(n_clusters=2, channels=(4, 8), embed_dim=4, pretrain_steps=3, kmeans_n_init=2,
                       batch_size=20, engine=_engine(3))
    base = DepictTrainer(x, config=cfg)
    base.fit()
    dec_cfg = DepictConfig(n_clusters=2, channels=(4, 8), embed_dim=4, pretrain_steps=0, head="student_t",
                           reconstruction_weight=0.0, kmeans_n_init=2, batch_size=20, engine=_engine(1))
    dec = DepictTrainer(x, config=dec_cfg, pretrained=base.model)
    net = dec.build_net()
    for name, value in base.model.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(net.state_dict()[name], value), name
    assert isinstance(net.head, HEADS.get("student_t"))
    dec.fit()  # step 0 initialises the centroids by k-means on the pretrained embedding
    assert sorted(set(dec.kmeans_labels.tolist())) == [0, 1]
    with pytest.raises(ValueError, match="pretrained"):
        DepictTrainer(x, config=DepictConfig(n_clusters=2, channels=(4,), embed_dim=4), pretrained=base.model)
    with pytest.raises(TypeError, match="pretrained"):
        DepictTrainer(x, config=dec_cfg, pretrained=torch.nn.Linear(2, 2))


def test_starting_from_a_pretrained_net_reproduces_one_long_run_at_the_kmeans_step():
    """k-means labels of a run from a pretrained net equal those of k-means on that net's embedding."""
    from sklearn.cluster import KMeans

    x = _two_blobs()
    cfg = dict(n_clusters=2, channels=(4, 8), embed_dim=4, kmeans_n_init=3, batch_size=20)
    base = DepictTrainer(x, config=DepictConfig(pretrain_steps=5, engine=_engine(5, seed=3), **cfg))
    base.fit()
    tr = DepictTrainer(x, config=DepictConfig(pretrain_steps=0, engine=_engine(1, seed=3), **cfg),
                       pretrained=base.model)
    tr.fit()
    km = KMeans(n_clusters=2, n_init=3, random_state=3).fit(base.embed()[0].double().numpy())
    assert tr.kmeans_labels.tolist() == km.labels_.tolist()


@pytest.mark.parametrize("head, weight", [("softmax", 1.0), ("student_t", 0.0)])
def test_training_resumes_exactly_across_target_updates(tmp_path, head, weight):
    x = _two_blobs()

    def run(out, steps, resume=False):
        # target updates (k-means at the first) at steps 1 and 3; the checkpoint at step 2 lies between
        cfg = DepictConfig(n_clusters=2, channels=(4,), embed_dim=3, pretrain_steps=1, update_interval=2, tol=0.0,
                           head=head, reconstruction_weight=weight, kmeans_n_init=2, batch_size=16,
                           engine=_engine(steps, log_every=1, out_dir=str(out), checkpoint_every=2))
        tr = DepictTrainer(x, config=cfg)
        result = tr.fit(resume=resume)
        runs.append(tr)
        return tr.model, result

    runs = []
    assert_resumes_exactly(run, tmp_path)
    full, _, resumed = runs
    assert torch.equal(resumed.kmeans_labels, full.kmeans_labels)  # restored with the checkpoint
    assert torch.equal(resumed.predict(), full.predict())


def test_student_t_head_after_kmeans_init_does_not_depend_on_the_embedding_scale():
    torch.manual_seed(0)
    z = torch.cat([torch.randn(15, 2, dtype=torch.float64) + 4 * torch.eye(2, dtype=torch.float64)[k]
                   for k in range(2)])
    small, large = HEADS.get("student_t")(2, 2).double(), HEADS.get("student_t")(2, 2).double()
    kmeans_init_head(small, 0.01 * z, n_init=2)
    kmeans_init_head(large, z, n_init=2)
    with torch.no_grad():
        torch.testing.assert_close(torch.softmax(small(0.01 * z), -1), torch.softmax(large(z), -1))


def test_clean_clustering_path_feeds_the_head_from_the_clean_encoder():
    torch.manual_seed(0)
    net = DepictNet((1, 8, 8), n_clusters=3, channels=(4,), embed_dim=3, noise=0.5)
    x = torch.rand(6, 1, 8, 8)
    torch.manual_seed(1)
    logits, recon = net(x, path="clean")
    torch.testing.assert_close(logits, net.clean(x)[1])
    torch.manual_seed(1)
    noisy_logits, noisy_recon = net(x)  # same dropout draw: same reconstruction, noisy head input
    torch.testing.assert_close(recon, noisy_recon)
    assert not torch.allclose(noisy_logits, logits)
    logits.sum().backward()  # the clustering loss on the clean path trains the encoder
    assert float(net.convs[0].weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="`path`"):
        net(x, path="both")
    with pytest.raises(ValueError, match="clustering_path"):
        DepictConfig(clustering_path="both")
    assert DepictConfig().clustering_path == "noisy"  # the paper's
