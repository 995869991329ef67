"""DEPICT's network: a convolutional autoencoder with noisy and clean encoder paths and a softmax head.

Encoder: ``len(channels)`` stride-2 3x3 convolutions with ReLU, then a linear map
to the embedding z (``embed_dim``); the clustering head is a linear layer on z
(softmax gives the soft assignments Q). The *noisy* path applies dropout
(rate ``noise``) to the input and to every hidden layer; the *clean* path applies
none. The decoder mirrors the encoder from the noisy embedding and is scored on
every layer, as in DEPICT (Ghasedi Dizaji et al. 2017, sec. 3.3):

    L_rec = sum_l mean_i || h_l^clean(x_i) - hhat_l(x_i) ||^2 / dim(h_l),

over l = input, each convolution's output, and the embedding (hhat = the noisy z).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DepictNet"]


class DepictNet(nn.Module):
    """Autoencoder + clustering head for images ``(N, C, H, W)`` with H and W divisible by 2^len(channels).

    ``forward(x)`` (the training path) returns ``(noisy_logits (N, K), reconstruction_loss ())``;
    ``clean(x)`` returns ``(z (N, embed_dim), logits (N, K))`` without noise.

    >>> net = DepictNet((1, 8, 8), n_clusters=3)
    >>> [tuple(t.shape) for t in net.clean(torch.zeros(2, 1, 8, 8))]
    [(2, 10), (2, 3)]
    """

    def __init__(self, in_shape: Sequence[int], *, n_clusters: int, channels: Sequence[int] = (32, 64),
                 embed_dim: int = 10, noise: float = 0.1) -> None:
        super().__init__()
        c, h, w = (int(v) for v in in_shape)
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
        self.head = nn.Linear(embed_dim, n_clusters)

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

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        noisy = self._encode(x, noisy=True)
        with torch.no_grad():
            clean = self._encode(x, noisy=False)
        recon = self._decode(noisy[-1]) + [noisy[-1]]
        loss = sum(F.mse_loss(r, t) for r, t in zip(recon, clean))
        return self.head(noisy[-1]), loss

    def clean(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self._encode(x, noisy=False)[-1]
        return z, self.head(z)
