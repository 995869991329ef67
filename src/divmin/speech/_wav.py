"""16-bit PCM WAV input / output of paired speech and EGG, with the standard library ``wave``.

A mono file holds speech; a stereo file holds speech in channel 0 and the EGG in
channel 1 (the layout of CMU ARCTIC-style recordings; pass ``egg_channel=0`` for files
that store them the other way round). Samples map to [-1, 1) by x = int16 / 32768.
"""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np

from ..engine import Int
from ..eval import mono_signal

__all__ = ["read_wav", "write_wav"]


def _mono(x, name: str) -> np.ndarray:
    return mono_signal(x, name, bound=1.0)  # PCM samples lie in [-1, 1)


def write_wav(path, speech, *, sample_rate: int, egg=None) -> Path:
    """Write ``speech`` (T,) and optionally ``egg`` (T,) in [-1, 1] as a 16-bit mono/stereo WAV.

    >>> import tempfile, os
    >>> p = write_wav(os.path.join(tempfile.mkdtemp(), "x.wav"), np.zeros(8), sample_rate=16000)
    >>> read_wav(p)[0].shape
    (8,)
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"`sample_rate` must be a positive int, got {sample_rate!r}")
    channels = [_mono(speech, "speech")]
    if egg is not None:
        channels.append(_mono(egg, "egg"))
        if channels[1].size != channels[0].size:
            raise ValueError(f"`egg` must have as many samples as `speech`, got {channels[1].size} "
                             f"and {channels[0].size}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike, got {type(path).__name__}")
    pcm = np.clip(np.round(np.stack(channels, axis=1) * 32768), -32768, 32767).astype("<i2")
    path = Path(path)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(len(channels))
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(pcm.tobytes())
    return path


def read_wav(path, *, sample_rate: int | None = None, egg_channel: int = 1):
    """Read a 16-bit WAV: returns ``(speech, egg or None, sample_rate)``, float64 in [-1, 1).

    ``sample_rate``, when given, must match the file's (no resampling here). A stereo file
    gives the EGG from ``egg_channel`` and speech from the other channel.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike, got {type(path).__name__}")
    if sample_rate is not None:
        Int(ge=1)("sample_rate", sample_rate)
    if isinstance(egg_channel, bool) or egg_channel not in (0, 1):
        raise ValueError(f"`egg_channel` must be 0 or 1, got {egg_channel!r}")
    try:
        with wave.open(os.fspath(path), "rb") as f:
            n_ch, width, fs, n = f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()
            raw = f.readframes(n)
    except (wave.Error, EOFError) as err:  # not RIFF/WAVE, a compressed format, or cut inside the header
        raise ValueError(f"`path` is not a readable PCM WAV file: {path} ({err or 'truncated header'})") from None
    if width != 2:
        raise ValueError(f"`path` must be 16-bit PCM, got {8 * width}-bit samples")
    if sample_rate is not None and sample_rate != fs:
        raise ValueError(f"`sample_rate` mismatch: expected {sample_rate} Hz, the file has {fs} Hz")
    if n == 0:
        raise ValueError(f"`path` holds an empty signal: {path}")
    if n_ch not in (1, 2):
        raise ValueError(f"`path` must be mono or stereo, got {n_ch} channels")
    if len(raw) != 2 * n_ch * n:
        raise ValueError(f"`path` is truncated: its header announces {n} frames, the file holds "
                         f"{len(raw) // (2 * n_ch)}: {path}")
    data = np.frombuffer(raw, dtype="<i2").reshape(n, n_ch).astype(np.float64) / 32768
    if n_ch == 1:
        return data[:, 0], None, fs
    return data[:, 1 - egg_channel], data[:, egg_channel], fs
