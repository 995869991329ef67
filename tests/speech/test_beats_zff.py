"""Acceptance: the trained model identifies more GCIs than ZFF on held-out synthetic speech.

Training as in the recipe, smaller: modal and breathy voices, f0 uniform in 60-220 Hz (with
jitter, shimmer and vibrato), 0-20 dB SNR of white, pink or brown noise, any recording channel.
Test: fresh modal-voice utterances (another corpus seed, f0 uniform in 60-220 Hz) and creaky-voice
utterances (a quality never seen in training: f0 ~ 70 Hz, Rd 0.5, 4 % jitter, 12 % shimmer),
pink (1/f) noise at 0-10 dB SNR, each through a channel drawn from none / 100 Hz low-cut /
300-3400 Hz telephone band (nonlinear-phase Butterworth filters, :data:`divmin.speech.CHANNELS`).
Low-frequency noise and low-cut channels are common in real recordings; they hide the energy
near 0 Hz that zero-frequency filtering reads, while the closure excitation stays visible in the
pass band. (On breathy voice under these channels and SNRs this small model does not beat ZFF:
the recipe's table reports it.)
"""

from __future__ import annotations

import numpy as np
import pytest

from divmin.engine import EngineConfig
from divmin.eval import detect_egg_instants, gci_metrics
from divmin.speech import CHANNELS, SpeechToEGGTrainer, SpeechToEGGConfig, synthesize_corpus, zff_gci

FS = 8000.0




@pytest.mark.slow
def test_model_beats_zff_identification_rate_on_held_out_data():
    train = synthesize_corpus(16, voices=("modal", "breathy"), f0=(60.0, 220.0), snr_db=(0.0, 20.0),
                              noises=("white", "pink", "brown"), channels=tuple(CHANNELS), duration=0.5,
                              sample_rate=FS, seed=1)
    engine = EngineConfig(max_steps=500, log_every=500, progress=False, tensorboard=False, cpu=True, seed=0,
                          lr_schedule="cosine")
    cfg = SpeechToEGGConfig(frame_len=256, hop=64, hidden=16, batch_size=16, lr=3e-3, ae_steps=200, adv_weight=0.1,
                            adv_warmup=150, engine=engine)
    model = SpeechToEGGTrainer(np.stack([u.speech for u in train]), np.stack([u.egg for u in train]), config=cfg)
    model.fit()
    for voice, f0 in (("modal", (60.0, 220.0)), ("creaky", None)):
        test = synthesize_corpus(8, voices=(voice,), f0=f0, snr_db=(0.0, 10.0), noises=("pink",),
                                 channels=tuple(CHANNELS), duration=0.5, sample_rate=FS, seed=5)
        ours = [gci_metrics(u.gci, detect_egg_instants(model.predict(u.speech).numpy(), FS, smooth_ms=1.0,
                                                       period_fraction=0.5).gci) for u in test]
        zff = [gci_metrics(u.gci, zff_gci(u.speech, FS)) for u in test]
        idr_ours, idr_zff = np.mean([m.idr for m in ours]), np.mean([m.idr for m in zff])
        assert idr_ours > idr_zff + 0.1 and idr_ours > 0.8, (voice, idr_ours, idr_zff)
