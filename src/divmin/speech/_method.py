"""``divmin train speech_egg``: speech to EGG (Prathosh et al., 2019) on the synthetic paired corpus.

Data: ``utterances`` paired speech / EGG utterances of :func:`divmin.speech.synthesize_corpus`, drawn
over the voices, f0 and SNR ranges, noise colours and recording channels of the config (seed
``corpus_seed``). The method's knobs are :class:`SpeechToEGGConfig`'s, under ``speech_egg.``
(``--set speech_egg.adv_weight=0`` is the no-adversary baseline).

Export: the speech encoder and the decoder as one :class:`SpeechEGGNet` (``model.safetensors`` +
``config.json`` in ``RUN_DIR/final``); :func:`divmin.engine.load_exported` rebuilds it:
``net(frames)`` maps speech frames (B, frame_len) to EGG frames, ``net.predict(speech)`` a whole
mono utterance (T,) to its EGG (T,), as the trainer's ``predict`` does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model
from torch import Tensor, nn

from ..engine import (EngineConfig, Instance, Int, Models, Number, OneOf, TrainMethod, Tuple, export_module,
                      exportable_module, train_method, validate)
from ._corpus import synthesize_corpus
from ._lf import VOICE_QUALITIES
from ._model import FrameDecoder, FrameEncoder, frame_signal, overlap_add
from ._synth import CHANNELS, NOISE_COLORS
from ._train import SpeechToEGGConfig, normalize_speech

from ._train import SpeechToEGGTrainer

__all__ = ["SpeechEGGNet", "SpeechEGGTrainConfig"]


class SpeechEGGNet(nn.Module):
    """The trained speech -> EGG path: speech encoder E_s then decoder D, frames (B, L) -> EGG frames (B, L)."""

    def __init__(self, speech_encoder: FrameEncoder, decoder: FrameDecoder, *, frame_len: int, hop: int) -> None:
        super().__init__()
        self.speech_encoder, self.decoder = speech_encoder, decoder
        self.frame_len, self.hop = frame_len, hop

    def forward(self, frames: Tensor) -> Tensor:
        return self.decoder(self.speech_encoder(frames))

    @torch.no_grad()
    def predict(self, speech: Tensor) -> Tensor:
        """The EGG (T,) of mono ``speech`` (T,): unit RMS, frames at ``hop``, E_s and D, overlap-add with a
        Hann taper floored at 1e-3 (as the trainer's ``predict``)."""
        if not isinstance(speech, Tensor) or speech.ndim != 1:
            raise ValueError(f"`speech` must be a mono (T,) tensor, got {getattr(speech, 'shape', type(speech).__name__)}")
        frames = frame_signal(normalize_speech(speech.float()), self.frame_len, self.hop)
        dev = next(self.parameters()).device
        out = torch.cat([self(f.to(dev)).cpu() for f in frames.split(256)])
        window = torch.hann_window(self.frame_len, periodic=False).clamp_min(1e-3)
        return overlap_add(out, self.hop, speech.numel(), window=window)


def _tiny_speech_egg() -> SpeechToEGGConfig:
    # seconds on a CPU (about 8 s of one core; the predicted EGG of held-out utterances correlates 0.94 with
    # the true one): the speech-egg recipe's network and settings at half its steps, with a constant
    # learning rate (its cosine decay, over so short a run, stops the speech encoder before it has learnt)
    return SpeechToEGGConfig(hidden=16, batch_size=16, ae_steps=120, critic_steps=3, adv_weight=0.1, adv_warmup=90,
                             divergence="js", lr=3e-3, lr_critic=3e-3, engine=EngineConfig(max_steps=300, log_every=50))


@dataclasses.dataclass
class SpeechEGGTrainConfig:
    """``divmin train speech_egg``: the synthetic training corpus, and the method's settings under ``speech_egg``."""

    utterances: int = 12  # paired speech / EGG utterances of the synthetic corpus
    voices: tuple[str, ...] = ("modal", "breathy")  # voice qualities drawn (divmin.speech.VOICE_QUALITIES)
    f0: tuple[float, float] = (60.0, 220.0)  # f0 range (Hz), uniform
    snr_db: tuple[float, float] = (0.0, 20.0)  # SNR range (dB), uniform
    noises: tuple[str, ...] = ("white", "pink", "brown")  # noise colours drawn (divmin.speech.NOISE_COLORS)
    channels: tuple[str, ...] = ("none", "highpass", "telephone")  # recording channels drawn (divmin.speech.CHANNELS)
    duration: float = 0.5  # seconds per utterance
    sample_rate: float = 8000.0  # sampling rate of the corpus (Hz)
    corpus_seed: int = 1  # seed of the corpus (each utterance's draws and synthesis)
    speech_egg: SpeechToEGGConfig = dataclasses.field(default_factory=_tiny_speech_egg)  # the method (speech_egg.engine: the loop)

    CHECKS = dict(utterances=Int(ge=1), voices=Tuple(each=OneOf(VOICE_QUALITIES), min_len=1),
                  f0=Tuple((Number(ge=20, le=1000),) * 2), snr_db=Tuple((Number(), Number())),
                  noises=Tuple(each=OneOf(NOISE_COLORS), min_len=1), channels=Tuple(each=OneOf(CHANNELS), min_len=1),
                  duration=Number(gt=0), sample_rate=Number(ge=8000), corpus_seed=Int(ge=0),
                  speech_egg=Instance(SpeechToEGGConfig))

    def __post_init__(self) -> None:
        validate(self)

    def corpus(self) -> list:
        return synthesize_corpus(self.utterances, voices=self.voices, f0=self.f0, snr_db=self.snr_db,
                                 noises=self.noises, channels=self.channels, duration=self.duration,
                                 sample_rate=self.sample_rate, seed=self.corpus_seed)


@exportable_module("speech_egg_net")
def _speech_egg_net(latent_dim: int, hidden: int, layers: int, decoder_layers: int, kernel: int, frame_len: int,
                    hop: int) -> nn.Module:
    return SpeechEGGNet(FrameEncoder(latent_dim, hidden, layers, kernel),
                        FrameDecoder(latent_dim, hidden, decoder_layers, kernel), frame_len=frame_len, hop=hop)


def _net_args(config: SpeechEGGTrainConfig) -> dict[str, Any]:
    c = config.speech_egg
    return {"latent_dim": c.latent_dim, "hidden": c.hidden, "layers": c.layers, "decoder_layers": c.decoder_layers,
            "kernel": c.kernel, "frame_len": c.frame_len, "hop": c.hop}


@train_method("speech_egg", SpeechEGGTrainConfig, "speech to EGG by adversarial approximate inference (synthetic corpus)")
class SpeechEGGMethod(TrainMethod):
    parts = ("speech_encoder", "decoder")  # the engine models exported, as SpeechEGGNet's submodules

    def models(self, config: SpeechEGGTrainConfig, training: bool) -> Models:
        # the exported network's shape, to reload a checkpoint into; the trainer builds and trains its own
        return Models(_speech_egg_net(**_net_args(config)))

    def trainer(self, config: SpeechEGGTrainConfig, models: Models) -> SpeechToEGGTrainer:
        corpus = config.corpus()
        return SpeechToEGGTrainer(np.stack([u.speech for u in corpus]), np.stack([u.egg for u in corpus]),
                           config=config.speech_egg)

    def trained(self, trainer: SpeechToEGGTrainer) -> nn.Module:
        c = trainer.config
        return SpeechEGGNet(trainer.speech_encoder, trainer.decoder, frame_len=c.frame_len, hop=c.hop)

    def restore(self, models: Models, checkpoint: Path) -> nn.Module:
        for part in self.parts:
            load_model(getattr(models.model, part), str(Path(checkpoint) / "models" / f"{part}.safetensors"))
        return models.model

    def export(self, model: nn.Module, models: Models, config: Any, run_dir: Path) -> list[Path]:
        return export_module(model, "speech_egg_net", _net_args(config), run_dir)
