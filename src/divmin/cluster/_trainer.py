"""`DepictTrainer`: DEPICT deep clustering (Ghasedi Dizaji et al. 2017) on the shared engine.

Schedule (engine steps, one optimizer "clusterer" over the whole `DepictNet`):

1. ``pretrain_steps`` steps of reconstruction only (noisy/clean autoencoder), or none
   when the trainer starts from a ``pretrained`` network (the recipe pretrains once and
   fine-tunes DEPICT and DEC from the same weights);
2. k-means on the clean embeddings initialises the head (``HEADS``): the nearest-centroid
   softmax (logit_k = -|z - mu_k|^2 / s up to a per-row constant) or DEC's Student-t
   centroids;
3. then, every ``update_interval`` steps, the target P is recomputed from the clean
   soft assignments Q over the whole data set (rule ``target``), and between updates
   the network minimises ``depict_loss(logits, P) + reconstruction_weight * L_rec``, the logits
   from the encoder path ``clustering_path`` (the reconstruction always decodes the noisy
   embedding against the clean layers);
   with ``reconstruction_weight=0`` the decoder is dropped and the clean path is trained
   (DEC: ``head="student_t", target="dec", reconstruction_weight=0``).
   Training stops (``ctx.request_stop()``) when the fraction of samples whose
   argmax assignment changed between two target updates is below ``tol`` (the
   paper's and DEC's stop rule), or after ``engine.max_steps``.

``clustering_path``: the paper feeds the clustering loss from the noisy path ("noisy", the
default); "clean" feeds it from the clean path. Why both: on 5,000 Fashion-MNIST images (seed 0,
1000 pretraining steps, k-means start 0.516) the noisy path (dropout 0.2) merged clusters within
300 steps: one cluster grew from 462 to 2,629 images, two emptied, accuracy fell to 0.41; so it
did with lr 1e-4 (0.37), dropout 0.1 and lr 1e-4 (0.40), dropout 0.05 (0.40), reconstruction
weight 10 (0.44) and a tanh-bounded embedding as in the authors' code. On the clean path the
cluster sizes stayed put (0.511 after 600 steps): the noisy pathway, not the target rule, step
size or reconstruction balance, drives that fall. On digits (the depict recipe's defaults, 5 seeds)
the noisy path is the better one: accuracy 0.793 ± 0.028 against 0.754 ± 0.034 on the clean path.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from ..divergences import Divergence, as_divergence
from ..engine import (EngineConfig, Instance, Int, IsDivergence, MethodTrainer, Number, OneOf, StepContext,
                      StepOutput, Tuple, trainable_adamw, validate)
from ._nets import HEADS, PATHS, DepictNet, SoftmaxHead
from ._objective import TARGET_RULES, auxiliary_target, depict_loss

__all__ = ["DepictConfig", "DepictTrainer", "kmeans_init_head"]


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=2000, log_every=50, progress=False, tensorboard=False)


@dataclasses.dataclass
class DepictConfig:
    """Settings of :class:`DepictTrainer`; every field is checked on construction."""

    n_clusters: int = 10  # K, number of clusters (>= 2, <= number of samples)
    head: str = "softmax"  # clustering head, a name in HEADS ("softmax": DEPICT; "student_t": DEC)
    target: str = "dec"  # auxiliary target rule, a name in TARGET_RULES ("dec": the authors' code; "paper")
    divergence: str | Divergence = "forward_kl"  # D(P || Q) of the clustering loss; KL is the paper's
    clustering_path: str = "noisy"  # encoder path of the clustering loss, a name in PATHS (see the module docstring)
    reconstruction_weight: float = 1.0  # weight of the layer-wise reconstruction loss in the joint phase (0: DEC)
    channels: tuple[int, ...] = (32, 64)  # conv widths of the encoder (each halves H and W)
    embed_dim: int = 10  # embedding size
    noise: float = 0.1  # dropout rate of the noisy encoder path
    pretrain_steps: int = 300  # reconstruction-only steps before the k-means initialisation
    update_interval: int = 20  # steps between target updates
    tol: float = 0.001  # stop when fewer than this fraction of assignments change between updates
    kmeans_n_init: int = 10  # k-means restarts for the head initialisation (at most 1000)
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    batch_size: int = 128  # samples per micro-batch
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)  # training loop settings

    CHECKS = dict(  # one per field: divmin.engine.validate
        n_clusters=Int(ge=2), head=OneOf(HEADS), clustering_path=OneOf(PATHS), target=OneOf(TARGET_RULES),
        divergence=IsDivergence(),
        reconstruction_weight=Number(ge=0), channels=Tuple(each=Int(ge=1), min_len=1), embed_dim=Int(ge=1),
        noise=Number(ge=0, lt=1), pretrain_steps=Int(ge=0), update_interval=Int(ge=1), tol=Number(ge=0, le=1),
        kmeans_n_init=Int(ge=1, le=1000), lr=Number(gt=0), weight_decay=Number(ge=0), batch_size=Int(ge=1),
        engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)


@torch.no_grad()
def kmeans_init_head(head: nn.Module, z: Tensor, *, seed: int = 0, n_init: int = 10) -> Tensor:
    """Initialise ``head`` (a ``HEADS`` member, K outputs) from k-means on ``z`` (N, d); return the labels (N,).

    For the softmax head, with centroids mu_k and s the mean squared distance to the nearest
    centroid, weight_k = 2 mu_k / s and bias_k = -|mu_k|^2 / s, so logit_k = -(|z - mu_k|^2 - |z|^2) / s;
    the Student-t head takes the centroids themselves. Either way argmax(head(z)) = the k-means labels.
    ``n_init``: k-means restarts, 1 to 1000.

    >>> head = nn.Linear(1, 2)
    >>> labels = kmeans_init_head(head, torch.tensor([[0.0], [0.1], [5.0], [5.1]]), n_init=1)
    >>> labels.tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])
    True
    """
    try:
        from sklearn.cluster import KMeans
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError('DEPICT\'s k-means initialisation needs scikit-learn: pip install "divmin[data]"') from err
    k, d = _head_size(head)
    Int(ge=1, le=1000)("n_init", n_init)  # more restarts never help and would run for hours
    Int(ge=0)("seed", seed)
    if not isinstance(z, Tensor) or not z.is_floating_point():
        raise TypeError(f"`z` must be a floating torch.Tensor (N, d), got {getattr(z, 'dtype', type(z).__name__)}")
    if z.ndim != 2 or z.shape[1] != d or z.shape[0] < k:
        raise ValueError(f"`z` must have shape (N >= {k} clusters, d = {d}, the head's input width), "
                         f"got {tuple(z.shape)}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("`z` must be finite (k-means of NaN/inf embeddings is undefined)")
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(z.detach().double().cpu().numpy())
    ref = next(head.parameters())
    mu = torch.as_tensor(km.cluster_centers_, dtype=ref.dtype, device=ref.device)
    scale = max(float(km.inertia_) / z.shape[0], 1e-8)
    if hasattr(head, "init_from_centroids"):
        head.init_from_centroids(mu, scale)
    else:  # a plain linear head: DEPICT's softmax
        SoftmaxHead.init_from_centroids(head, mu, scale)
    return torch.as_tensor(km.labels_, dtype=torch.long)


def _head_size(head: Any) -> tuple[int, int]:
    """(K outputs, d inputs) of a clustering head: an ``nn.Linear`` or a ``HEADS`` member."""
    if not (isinstance(head, nn.Linear) or hasattr(head, "init_from_centroids")):
        raise TypeError(f"`head` must be an nn.Linear or a HEADS member, got {type(head).__name__}")
    k, d = getattr(head, "out_features", None), getattr(head, "in_features", None)
    if not (isinstance(k, int) and isinstance(d, int)) or k < 1:
        raise TypeError("`head` must have int `in_features` and `out_features` >= 1")
    return k, d


def _new_net(in_shape: tuple[int, ...], config: DepictConfig, backbone: dict[str, Tensor] | None) -> DepictNet:
    """A fresh `DepictNet` for ``config``, starting from the ``backbone`` weights (all but the head) if given."""
    net = DepictNet(in_shape, n_clusters=config.n_clusters, channels=config.channels, embed_dim=config.embed_dim,
                    noise=config.noise, head=config.head)
    if backbone is not None:
        net.load_state_dict(copy.deepcopy(backbone), strict=False)
    return net


@torch.no_grad()
def _embed(net: DepictNet, x: Tensor, device: Any = None, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Clean embeddings (N, embed_dim) and head logits (N, K) of ``x``, ``chunk`` images per forward."""
    device = next(net.parameters()).device if device is None else device
    parts = [net.clean(x[i:i + chunk].to(device)) for i in range(0, x.shape[0], chunk)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _soft_assignments(net: DepictNet, x: Tensor, device: Any = None) -> Tensor:
    """Q = softmax of the clean head logits, (N, K)."""
    return torch.softmax(_embed(net, x, device)[1].float(), dim=-1)


@dataclasses.dataclass
class _DepictState:
    """What the task leaves behind for :class:`DepictTrainer`: the k-means clusters that initialised the head."""

    kmeans_labels: Tensor | None = None  # (N,)


class _DepictTask:
    find_unused_parameters = True  # the head gets no gradient while pretraining

    def __init__(self, *, config: DepictConfig, x: Tensor, divergence: Divergence, new_net: Callable[[], DepictNet],
                 state: _DepictState) -> None:
        self.c, self.x, self.div, self.new_net, self.state = config, x, divergence, new_net, state
        self.target: Tensor | None = None  # (N, K) on the data device
        self.labels: Tensor | None = None  # (N,) argmax of Q at the last target update

    def models(self) -> dict[str, nn.Module]:
        return {"clusterer": self.new_net()}

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        c = self.c
        return {"clusterer": trainable_adamw(models["clusterer"], lr=c.lr, weight_decay=c.weight_decay)}

    def batches(self, ctx: StepContext) -> DataLoader:
        data = TensorDataset(self.x, torch.arange(self.x.shape[0]))
        return DataLoader(data, batch_size=self.c.batch_size, shuffle=True)

    def _refresh(self, ctx: StepContext) -> dict[str, float]:
        """(Re)compute the target P; at the first call initialise the head by k-means."""
        net = ctx.unwrap("clusterer")
        if self.target is None:
            z, _ = _embed(net, self.x, ctx.device)
            self.state.kmeans_labels = kmeans_init_head(net.head, z, seed=ctx.config.seed, n_init=self.c.kmeans_n_init)
        q = _soft_assignments(net, self.x, ctx.device)
        labels = q.argmax(1)
        self.target = auxiliary_target(q, rule=self.c.target)
        out = {} if self.labels is None else {"changed": float((labels != self.labels).float().mean())}
        self.labels = labels
        if out and out["changed"] < self.c.tol:
            ctx.request_stop()
        return out

    def train_step(self, batch: tuple[Tensor, Tensor], ctx: StepContext) -> StepOutput:
        c = self.c
        metrics: dict[str, Any] = {}
        since = ctx.step - c.pretrain_steps
        if since >= 0 and since % c.update_interval == 0 and ctx.micro_step == 0:
            metrics.update(self._refresh(ctx))
        x, idx = batch
        reconstruct = self.target is None or c.reconstruction_weight > 0
        logits, recon = ctx.models["clusterer"](x, reconstruct=reconstruct, path=c.clustering_path)
        metrics["reconstruction"] = recon.detach()
        if self.target is None:
            return StepOutput(loss=recon, metrics=metrics)
        cl = depict_loss(logits.float(), self.target[idx.to(self.target.device)].to(logits.device),
                         divergence=self.div)
        metrics["clustering"] = cl.detach()
        return StepOutput(loss=cl + c.reconstruction_weight * recon, metrics=metrics)

    def state_dict(self) -> dict[str, Any]:
        empty, kmeans = torch.empty(0), self.state.kmeans_labels
        return {"target": empty if self.target is None else self.target.cpu(),
                "labels": empty if self.labels is None else self.labels.cpu(),
                "kmeans": empty if kmeans is None else kmeans.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target = state["target"] if state["target"].numel() else None
        self.labels = state["labels"] if state["labels"].numel() else None
        kmeans = state.get("kmeans", torch.empty(0))
        self.state.kmeans_labels = kmeans if kmeans.numel() else None


class DepictTrainer(MethodTrainer):
    """Cluster images ``x`` (N, C, H, W) into ``config.n_clusters`` groups with DEPICT.

    ``pretrained``: a `DepictNet` of the same shape (channels, embed_dim) whose autoencoder
    weights (all but the head) start the run, usually with ``pretrain_steps=0``.

    ``fit(resume=False)`` runs the engine (the trained `DepictNet` is then ``model``);
    ``predict(x=None)`` gives cluster ids (N,) and ``soft_assignments(...)`` Q (N, K),
    both from the clean path, on the training images by default. ``kmeans_labels`` (N,) are the
    k-means clusters of the pretrained embedding that initialised the head (None before).
    """

    trained_models = {"clusterer": "model"}

    def __init__(self, x: Tensor, *, config: DepictConfig | None = None, pretrained: DepictNet | None = None) -> None:
        config = self.use_config(config, DepictConfig)
        if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
            raise ValueError(f"`x` must be a float tensor (N, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
        if config.n_clusters > x.shape[0]:
            raise ValueError(f"`n_clusters` ({config.n_clusters}) exceeds the number of samples ({x.shape[0]})")
        self.x, self.div = x, as_divergence(config.divergence)
        self.model: DepictNet | None = None
        self._state = _DepictState()  # kept across fits, filled by the task
        self.pretrained = None if pretrained is None else self._backbone(pretrained)

    @property
    def kmeans_labels(self) -> Tensor | None:
        """(N,) k-means clusters of the pretrained embedding that initialised the head (None before)."""
        return self._state.kmeans_labels

    def _backbone(self, net: Any) -> dict[str, Tensor]:
        """The non-head weights of ``net``, checked against this config's network."""
        if not isinstance(net, DepictNet):
            raise TypeError(f"`pretrained` must be a DepictNet, got {type(net).__name__}")
        own = {k: v.shape for k, v in self.build_net(backbone=False).state_dict().items() if not k.startswith("head.")}
        theirs = {k: v for k, v in net.state_dict().items() if not k.startswith("head.")}
        if {k: v.shape for k, v in theirs.items()} != own:
            raise ValueError("`pretrained` does not match the configured network (in_shape, channels, embed_dim)")
        return {k: v.detach().cpu().clone() for k, v in theirs.items()}

    def build_net(self, backbone: bool = True) -> DepictNet:
        """A fresh `DepictNet` for ``config`` (with the ``pretrained`` autoencoder weights when ``backbone``)."""
        return _new_net(self.x.shape[1:], self.config, self.pretrained if backbone else None)

    def make_task(self) -> _DepictTask:
        new_net = functools.partial(_new_net, self.x.shape[1:], self.config, self.pretrained)
        return _DepictTask(config=self.config, x=self.x, divergence=self.div, new_net=new_net, state=self._state)

    @torch.no_grad()
    def embed(self, net: DepictNet | None = None, device: Any = None, x: Tensor | None = None,
              chunk: int = 1024) -> tuple[Tensor, Tensor]:
        """Clean embeddings (N, embed_dim) and head logits (N, K) of ``x`` (default: the training images)."""
        net = self.model if net is None else net
        if net is None:
            raise ValueError("`model` is None: call fit() first")
        return _embed(net, self.x if x is None else x, device, chunk)

    def soft_assignments(self, net: DepictNet | None = None, device: Any = None, x: Tensor | None = None) -> Tensor:
        """Q = softmax of the clean head logits, (N, K)."""
        return torch.softmax(self.embed(net, device, x)[1].float(), dim=-1)

    def predict(self, x: Tensor | None = None) -> Tensor:
        """Cluster ids (N,): argmax of the clean soft assignments."""
        return self.soft_assignments(x=x).argmax(1).cpu()
