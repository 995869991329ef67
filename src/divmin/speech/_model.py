"""Networks of speech-to-EGG conversion: framing, convolutional encoders / decoder, latent critic.

Prathosh et al. (2019) model p(EGG | speech) with a latent z: an EGG autoencoder
(encoder E_g, decoder D) gives the informative prior p(z) = law of E_g(EGG); a speech
encoder E_s gives q(z | speech); the ELBO

    E_q[log p(egg | z)] - KL(q(z | speech) || p(z))

is maximised with the reconstruction through the (pre-trained, frozen) decoder D and
the KL term estimated adversarially from a critic between EGG codes (target P) and speech
codes (model Q): at its optimum the critic's logit is log p/q (``divmin.estimators``).

Here the codes are a sequence: a frame (B, L) of several pitch periods maps to codes
(B, latent_dim, L), one code per sample, through a stack of dilated 1-D convolutions
(dilations 1, 2, 4, ..., so the receptive field spans about one long pitch period), and
the critic judges each code vector on its own. Frames are processed independently;
:func:`overlap_add` stitches the predicted EGG, weighting each frame by a taper so that
the frame edges (the least context) count least.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..engine import Int

__all__ = ["FrameDecoder", "FrameEncoder", "LatentCritic", "frame_signal", "overlap_add"]


def frame_signal(x, frame_len: int, hop: int) -> Tensor:
    """Frames (N, frame_len) of a mono signal (T,), hop ``hop``, the tail zero-padded.

    >>> frame_signal(torch.arange(5.0), 4, 2).tolist()
    [[0.0, 1.0, 2.0, 3.0], [2.0, 3.0, 4.0, 0.0]]
    """
    if x.is_complex() if isinstance(x, Tensor) else np.iscomplexobj(x):
        raise TypeError("`x` must be a real signal, got a complex one")
    try:
        x = torch.as_tensor(x, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"`x` must be a signal of real numbers: {err}") from None
    if x.ndim != 1 or x.numel() == 0:
        raise ValueError(f"`x` must be a non-empty mono (1-D) signal, got shape {tuple(x.shape)}")
    Int(ge=1)("frame_len", frame_len)
    Int(ge=1, le=frame_len)("hop", hop)
    n = max(1, -(-(x.numel() - frame_len) // hop) + 1)
    pad = (n - 1) * hop + frame_len - x.numel()
    return torch.nn.functional.pad(x, (0, max(0, pad))).unfold(0, frame_len, hop)


def overlap_add(frames: Tensor, hop: int, length: int, *, window: Tensor | None = None) -> Tensor:
    """Inverse of :func:`frame_signal`: (N, L) -> (length,), overlapping samples averaged with
    weights ``window`` (L,) (None: equal weights), out[t] = sum_n w[t - n hop] x_n / sum_n w[t - n hop].

    >>> overlap_add(frame_signal(torch.arange(5.0), 4, 2), 2, 5).tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0]
    """
    if not isinstance(frames, Tensor) or not frames.is_floating_point():
        raise TypeError(f"`frames` must be a floating torch.Tensor, got "
                        f"{getattr(frames, 'dtype', type(frames).__name__)}")
    if frames.ndim != 2 or frames.shape[0] < 1 or frames.shape[1] < 1:
        raise ValueError(f"`frames` must be (N >= 1, frame_len >= 1), got shape {tuple(frames.shape)}")
    n, size = frames.shape
    # a hop beyond the frame length leaves samples no frame covers (0 / 0)
    Int(ge=1, le=size)("hop", hop)
    Int(ge=0, le=(n - 1) * hop + size)("length", length)
    w = torch.ones(size, dtype=frames.dtype) if window is None else torch.as_tensor(window, dtype=frames.dtype)
    if w.shape != (size,) or not bool(torch.all(w > 0)) or not bool(torch.isfinite(w).all()):
        raise ValueError(f"`window` must be ({size},), finite and positive, got shape {tuple(w.shape)}")
    w = w.to(frames.device).expand(n, size)
    total = (n - 1) * hop + size
    idx = (torch.arange(n, device=frames.device)[:, None] * hop + torch.arange(size, device=frames.device)).reshape(-1)
    out = torch.zeros(total, dtype=frames.dtype, device=frames.device).index_add_(0, idx, (w * frames).reshape(-1))
    count = torch.zeros(total, dtype=frames.dtype, device=frames.device).index_add_(0, idx, w.reshape(-1))
    return (out / count)[:length]


MAX_LAYERS = 24  # a dilation of 2^23 samples already spans 17 minutes at 8 kHz


def _dilated_stack(c_in: int, hidden: int, c_out: int, layers: int, kernel: int) -> nn.Sequential:
    """Conv1d stack c_in -> hidden (dilations 1, 2, 4, ...) -> 1x1 conv to c_out; length-preserving."""
    Int(ge=1)("hidden", hidden)
    Int(ge=1, le=MAX_LAYERS)("layers", layers)
    mods: list[nn.Module] = []
    c = c_in
    for i in range(layers):
        d = 2 ** i
        mods += [nn.Conv1d(c, hidden, kernel, dilation=d, padding=d * (kernel - 1) // 2), nn.SiLU()]
        c = hidden
    mods.append(nn.Conv1d(c, c_out, 1))
    return nn.Sequential(*mods)


def _check_input(x: Tensor, name: str, ndim: int | None, channels: int) -> None:
    """A floating tensor of ``ndim`` dims (None: any >= 1) whose channel dim (1 for 3-D, else last) is ``channels``."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating torch.Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if ndim == 2:  # frames (B, L): one input channel
        ok = x.ndim == 2 and x.shape[1] >= 1
    elif ndim == 3:
        ok = x.ndim == 3 and x.shape[1] == channels and x.shape[2] >= 1
    else:
        ok = x.ndim >= 1 and x.shape[-1] == channels
    if not ok:
        want = {2: "(B, L)", 3: f"(B, {channels}, L)", None: f"(..., {channels})"}[ndim]
        raise ValueError(f"`{name}` must have shape {want}, got {tuple(x.shape)}")


def _check_codec_args(latent_dim: int, kernel: int) -> None:
    """The arguments the frame encoder and decoder share: ``latent_dim`` >= 1, ``kernel`` odd >= 1."""
    Int(ge=1)("latent_dim", latent_dim)
    Int(ge=1)("kernel", kernel)
    if kernel % 2 == 0:
        raise ValueError(f"`kernel` must be odd (length-preserving padding), got {kernel}")


class FrameEncoder(nn.Module):
    """Frames (B, L) -> codes (B, latent_dim, L), dilated convolutions; used for EGG (E_g) and speech (E_s).

    Receptive field 1 + (kernel - 1) (2^layers - 1) samples (kernel odd)."""

    def __init__(self, latent_dim: int, hidden: int = 32, layers: int = 6, kernel: int = 5) -> None:
        super().__init__()
        _check_codec_args(latent_dim, kernel)
        self.net = _dilated_stack(1, hidden, latent_dim, layers, kernel)

    def forward(self, frames: Tensor) -> Tensor:
        _check_input(frames, "frames", 2, self.net[0].in_channels)
        return self.net(frames[:, None, :])


class FrameDecoder(nn.Module):
    """Codes (B, latent_dim, L) -> EGG frames (B, L), dilated convolutions."""

    def __init__(self, latent_dim: int, hidden: int = 32, layers: int = 3, kernel: int = 5) -> None:
        super().__init__()
        _check_codec_args(latent_dim, kernel)
        self.net = _dilated_stack(latent_dim, hidden, 1, layers, kernel)

    def forward(self, z: Tensor) -> Tensor:
        _check_input(z, "z", 3, self.net[0].in_channels)
        return self.net(z)[:, 0, :]


class LatentCritic(nn.Module):
    """Code vectors (..., latent_dim) -> logits (...); trained to label EGG codes 1 and speech codes 0."""

    def __init__(self, latent_dim: int, hidden: int = 64) -> None:
        super().__init__()
        Int(ge=1)("latent_dim", latent_dim)
        Int(ge=1)("hidden", hidden)
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, z: Tensor) -> Tensor:
        _check_input(z, "z", None, self.net[0].in_features)
        return self.net(z).squeeze(-1)
