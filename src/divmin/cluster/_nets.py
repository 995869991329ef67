"""DEPICT's network: a convolutional autoencoder with noisy and clean encoder paths and a clustering head.

Encoder: ``len(channels)`` stride-2 3x3 convolutions with ReLU, then a linear map
to the embedding z (``embed_dim``); the clustering head (``HEADS``) maps z to
logits whose softmax is the soft assignment Q. The *noisy* path applies dropout
(rate ``noise``) to the input and to every hidden layer; the *clean* path applies
none. The decoder mirrors the encoder from the noisy embedding and is scored on
every decoder layer against the clean encoder's layer of the same shape, as in
DEPICT (Ghasedi Dizaji et al. 2017, sec. 3.3):

    L_rec = sum_l mean_i || h_l^clean(x_i) - hhat_l(x_i) ||^2 / dim(h_l),

over l = input and each convolution's output. (The embedding itself is not scored:
a term ||z^clean - z^noisy||^2 only rewards shrinking z, which left DEC's fixed-width
kernel nearly flat.)

Heads (both initialised from k-means centroids mu_k by ``init_from_centroids``):

* ``"softmax"`` (DEPICT): a linear layer, logit_k = w_k . z + b_k;
* ``"student_t"`` (DEC, Xie et al. 2016): logit_k = -((alpha + 1) / 2) log(1 + |z - mu_k|^2 / (alpha s)),
  alpha = 1, so that softmax gives DEC's Student-t kernel q_ik ∝ (1 + |z_i - mu_k|^2 / s)^-1; s (a
  buffer, 1 until initialised) is the k-means mean squared distance to the nearest centroid, i.e.
  DEC's kernel on the embedding in units of its cluster radius (DEC's kernel is not scale-free).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine import Int, Number, Tuple
from ..registry import Registry

__all__ = ["HEADS", "PATHS", "DepictNet", "SoftmaxHead", "StudentTHead"]

# which encoder pathway feeds the clustering head in training: "noisy" (DEPICT, sec. 3.3) or "clean"
PATHS = ("noisy", "clean")


class SoftmaxHead(nn.Linear):
    """DEPICT's head: logits = z W^T + b, (N, d) -> (N, K)."""

    def __init__(self, embed_dim: int, n_clusters: int) -> None:
        super().__init__(embed_dim, n_clusters)

    @torch.no_grad()
    def init_from_centroids(self, mu: Tensor, scale: float) -> None:
        """Nearest-centroid softmax: w_k = 2 mu_k / s, b_k = -|mu_k|^2 / s, so logit_k = -(|z - mu_k|^2 - |z|^2) / s."""
        self.weight.copy_(2 * mu / scale)
        self.bias.copy_(-(mu * mu).sum(1) / scale)


class StudentTHead(nn.Module):
    """DEC's head: logits (N, K) = -((alpha + 1) / 2) log1p(|z - mu_k|^2 / (alpha s)), centroids mu (K, d) trained."""

    def __init__(self, embed_dim: int, n_clusters: int, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.centroids = nn.Parameter(torch.randn(n_clusters, embed_dim))
        self.register_buffer("scale", torch.ones(()))
        self.in_features, self.out_features = embed_dim, n_clusters

    def forward(self, z: Tensor) -> Tensor:
        d2 = (z[:, None, :] - self.centroids[None]).pow(2).sum(-1)
        return -0.5 * (self.alpha + 1) * torch.log1p(d2 / (self.alpha * self.scale))

    @torch.no_grad()
    def init_from_centroids(self, mu: Tensor, scale: float) -> None:
        """Centroids := the k-means centroids; kernel width := ``scale`` (mean squared distance to them)."""
        self.centroids.copy_(mu)
        self.scale.fill_(scale)


# name -> head class (embed_dim, n_clusters) -> module with init_from_centroids(mu (K, d), scale)
HEADS: Registry[type[nn.Module]] = Registry("clustering head")
HEADS.add("softmax", SoftmaxHead)
HEADS.add("student_t", StudentTHead)


def _in_shape(in_shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) of ``in_shape``: three positive ints."""
    ok = (isinstance(in_shape, Sequence) and not isinstance(in_shape, (str, bytes)) and len(in_shape) == 3
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in in_shape))
    if not ok:
        raise ValueError(f"`in_shape` must be three positive ints (C, H, W), got {in_shape!r}")
    return tuple(int(v) for v in in_shape)  # type: ignore[return-value]


class DepictNet(nn.Module):
    """Autoencoder + clustering head for images ``(N, C, H, W)`` with H and W divisible by 2^len(channels).

    ``forward(x)`` (the training path) returns ``(noisy_logits (N, K), reconstruction_loss ())``;
    ``forward(x, path="clean")`` feeds the head from the clean path instead (the decoder still reconstructs
    the clean layers from the noisy embedding);
    ``forward(x, reconstruct=False)`` returns ``(clean_logits (N, K), 0)`` without the decoder (DEC);
    ``clean(x)`` returns ``(z (N, embed_dim), logits (N, K))`` without noise.

    >>> net = DepictNet((1, 8, 8), n_clusters=3)
    >>> [tuple(t.shape) for t in net.clean(torch.zeros(2, 1, 8, 8))]
    [(2, 10), (2, 3)]
    """

    def __init__(self, in_shape: Sequence[int], *, n_clusters: int, channels: Sequence[int] = (32, 64),
                 embed_dim: int = 10, noise: float = 0.1, head: str = "softmax") -> None:
        super().__init__()
        c, h, w = _in_shape(in_shape)
        Int(ge=2)("n_clusters", n_clusters)
        Tuple(each=Int(ge=1), min_len=1)("channels", channels)
        Int(ge=1)("embed_dim", embed_dim)
        Number(ge=0, lt=1)("noise", noise)
        try:
            head_cls = HEADS.get(head)
        except ValueError as err:
            raise ValueError(f"`head`: {err}") from None
        scale = 2 ** len(channels)
        if h % scale or w % scale:
            raise ValueError(f"`in_shape` height and width must be divisible by {scale}, got {tuple(in_shape)}")
        widths = [c, *channels]
        self.noise = noise
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.deconvs = nn.ModuleList(nn.ConvTranspose2d(b, a, 3, stride=2, padding=1, output_padding=1)
                                     for a, b in zip(widths, widths[1:]))
        self.top_shape = (widths[-1], h // scale, w // scale)
        flat = widths[-1] * (h // scale) * (w // scale)
        self.embed = nn.Linear(flat, embed_dim)
        self.unembed = nn.Linear(embed_dim, flat)
        self.head = head_cls(embed_dim, n_clusters)
        self.in_shape = (c, h, w)

    def _check_x(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"`x` must be a floating torch.Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"`x` must have shape (N, {', '.join(map(str, self.in_shape))}), got {tuple(x.shape)}")

    def _encode(self, x: Tensor, noisy: bool) -> list[Tensor]:
        """[input, conv outputs..., z], each perturbed by dropout on the noisy path."""
        drop = (lambda t: F.dropout(t, self.noise, training=True)) if noisy and self.noise > 0 else (lambda t: t)
        layers = [drop(x)]
        for conv in self.convs:
            layers.append(drop(F.relu(conv(layers[-1]))))
        layers.append(self.embed(layers[-1].flatten(1)))
        return layers

    def _decode(self, z: Tensor) -> list[Tensor]:
        """Reconstructions [input, conv outputs...] from the embedding ``z``."""
        h = F.relu(self.unembed(z)).view(z.shape[0], *self.top_shape)
        outs = [h]
        for i in reversed(range(len(self.deconvs))):
            h = self.deconvs[i](h)
            h = F.relu(h) if i > 0 else h
            outs.append(h)
        return outs[::-1]

    def forward(self, x: Tensor, reconstruct: bool = True, path: str = "noisy") -> tuple[Tensor, Tensor]:
        self._check_x(x)
        if not isinstance(path, str) or path not in PATHS:
            raise ValueError(f"`path` must be one of {list(PATHS)}, got {path!r}")
        if not reconstruct:
            return self.head(self._encode(x, noisy=False)[-1]), x.new_zeros(())
        noisy = self._encode(x, noisy=True)
        # the clean layers are the reconstruction targets (no gradient through them); on the clean
        # clustering path the head's input keeps its gradient
        with torch.set_grad_enabled(path == "clean" and torch.is_grad_enabled()):
            clean = self._encode(x, noisy=False)
        recon = self._decode(noisy[-1])
        loss = sum(F.mse_loss(r, t.detach()) for r, t in zip(recon, clean[:-1]))
        return self.head((noisy if path == "noisy" else clean)[-1]), loss

    def clean(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check_x(x)
        z = self._encode(x, noisy=False)[-1]
        return z, self.head(z)
