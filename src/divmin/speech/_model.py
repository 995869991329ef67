"""Networks of speech-to-EGG conversion: framing, frame encoders / decoder, latent critic.

Prathosh et al. (2019) model p(EGG | speech) with a latent z: an EGG autoencoder
(encoder E_g, decoder D) gives the informative prior p(z) = law of E_g(EGG); a speech
encoder E_s gives q(z | speech); the ELBO

    E_q[log p(egg | z)] - KL(q(z | speech) || p(z))

is maximised with the reconstruction through the (pre-trained, frozen) decoder D and
the KL term estimated adversarially from a critic between EGG codes (target P) and speech
codes (model Q): at its optimum the critic's logit is log p/q (``divmin.estimators``).
Frames are processed independently; :func:`overlap_add` stitches the predicted EGG.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FrameDecoder", "FrameEncoder", "LatentCritic", "frame_signal", "overlap_add"]


def frame_signal(x, frame_len: int, hop: int) -> Tensor:
    """Frames (N, frame_len) of a mono signal (T,), hop ``hop``, the tail zero-padded.

    >>> frame_signal(torch.arange(5.0), 4, 2).tolist()
    [[0.0, 1.0, 2.0, 3.0], [2.0, 3.0, 4.0, 0.0]]
    """
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim != 1 or x.numel() == 0:
        raise ValueError(f"`x` must be a non-empty mono (1-D) signal, got shape {tuple(x.shape)}")
    if not (isinstance(frame_len, int) and isinstance(hop, int) and 1 <= hop <= frame_len):
        raise ValueError(f"`frame_len` and `hop` must be ints with 1 <= hop <= frame_len, got {frame_len}, {hop}")
    n = max(1, -(-(x.numel() - frame_len) // hop) + 1)
    pad = (n - 1) * hop + frame_len - x.numel()
    return torch.nn.functional.pad(x, (0, max(0, pad))).unfold(0, frame_len, hop)


def overlap_add(frames: Tensor, hop: int, length: int) -> Tensor:
    """Inverse of :func:`frame_signal`: (N, L) -> (length,), overlapping samples averaged.

    >>> overlap_add(frame_signal(torch.arange(5.0), 4, 2), 2, 5).tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0]
    """
    if frames.ndim != 2:
        raise ValueError(f"`frames` must be (N, frame_len), got shape {tuple(frames.shape)}")
    n, size = frames.shape
    total = (n - 1) * hop + size
    idx = (torch.arange(n, device=frames.device)[:, None] * hop + torch.arange(size, device=frames.device)).reshape(-1)
    out = torch.zeros(total, dtype=frames.dtype, device=frames.device).index_add_(0, idx, frames.reshape(-1))
    count = torch.zeros(total, dtype=frames.dtype, device=frames.device).index_add_(
        0, idx, torch.ones_like(frames).reshape(-1))
    return (out / count)[:length]


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class FrameEncoder(nn.Module):
    """Frame (B, frame_len) -> code (B, latent_dim), an MLP; used for EGG (E_g) and speech (E_s)."""

    def __init__(self, frame_len: int, latent_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = _mlp([frame_len, hidden, hidden, latent_dim])

    def forward(self, frames: Tensor) -> Tensor:
        return self.net(frames)


class FrameDecoder(nn.Module):
    """Code (B, latent_dim) -> EGG frame (B, frame_len), an MLP."""

    def __init__(self, frame_len: int, latent_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = _mlp([latent_dim, hidden, hidden, frame_len])

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class LatentCritic(nn.Module):
    """Code (B, latent_dim) -> logit (B,); trained to label EGG codes 1 and speech codes 0."""

    def __init__(self, latent_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = _mlp([latent_dim, hidden, hidden, 1])

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).squeeze(-1)
