"""`SpeechToEGGTrainer(unpaired_speech=...)`: unpaired speech reaches the adversary only; None changes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from divmin.engine import EngineConfig
from divmin.speech import SpeechToEGGConfig, SpeechToEGGTrainer, frame_signal, normalize_speech, synthesize_corpus


@pytest.fixture(scope="module")
def corpus():
    return synthesize_corpus(3, voices=("modal",), duration=0.3, seed=1)


def _config(tmp_path, adv_weight=0.1, **engine) -> SpeechToEGGConfig:
    eng = EngineConfig(max_steps=15, log_every=1, progress=False, tensorboard=False, out_dir=str(tmp_path), **engine)
    return SpeechToEGGConfig(frame_len=64, hop=16, hidden=4, batch_size=4, ae_steps=5, critic_steps=2,
                             adv_weight=adv_weight, adv_warmup=3, divergence="js", engine=eng)


def _fit(tmp_path, corpus, unpaired=None, **kw) -> tuple[SpeechToEGGTrainer, list[dict]]:
    paired = corpus[:2] if unpaired is not None else corpus
    t = SpeechToEGGTrainer(np.stack([u.speech for u in paired]), np.stack([u.egg for u in paired]),
                           config=_config(tmp_path, **kw), unpaired_speech=unpaired)
    t.fit()
    return t, [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def test_without_unpaired_speech_the_losses_are_those_before_it_existed(tmp_path, corpus):
    # recorded at a415bed (before `unpaired_speech` existed), same settings: an extra random draw or a
    # changed code path with unpaired_speech=None would move these by far more than the tolerance
    _, rows = _fit(tmp_path, corpus)
    # (drawing the adversary's frames afresh from the pairs moves latent_divergence by 8e-5 relative)
    assert rows[4]["ae_recon"] == pytest.approx(0.25651293992996216, rel=1e-5)
    assert rows[5]["critic_loss"] == pytest.approx(1.3710107803344727, rel=1e-5)
    assert rows[5]["latent_divergence"] == pytest.approx(0.0070763882249593735, rel=1e-5)
    assert rows[-1]["recon"] == pytest.approx(0.24887211620807648, rel=1e-5)
    assert rows[-1]["latent_divergence"] == pytest.approx(0.002719940384849906, rel=1e-5)


def test_without_unpaired_speech_the_adversary_sees_the_paired_batch(tmp_path, corpus):
    trainer = SpeechToEGGTrainer(np.stack([u.speech for u in corpus]), np.stack([u.egg for u in corpus]),
                                 config=_config(tmp_path))
    seen = []
    trainer.speech_encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    trainer.fit()
    assert len(seen) == 2 * (15 - 5)  # per phase-2 step: the critic's codes, then the reconstruction
    for critic_in, recon_in in zip(seen[::2], seen[1::2]):
        assert torch.equal(critic_in, recon_in)


def test_no_adversary_ignores_unpaired_speech(tmp_path, corpus):
    # adv_weight = 0: the reconstruction sees only the pairs, so the unpaired speech changes nothing
    paired = corpus[:2]
    _, with_unpaired = _fit(tmp_path / "a", corpus, unpaired=corpus[2].speech, adv_weight=0.0)
    t = SpeechToEGGTrainer(np.stack([u.speech for u in paired]), np.stack([u.egg for u in paired]),
                           config=_config(tmp_path / "b", adv_weight=0.0))
    t.fit()
    without = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("recon") for r in with_unpaired] == [r.get("recon") for r in without]


def test_adversary_pool_is_all_speech_and_its_codes_come_from_it(tmp_path, corpus):
    unpaired = np.stack([corpus[2].speech, 0.01 * corpus[0].speech[::-1].copy()])
    trainer = SpeechToEGGTrainer(np.stack([u.speech for u in corpus[:2]]), np.stack([u.egg for u in corpus[:2]]),
                                 config=_config(tmp_path), unpaired_speech=unpaired)
    # independent oracle of the pool: each unpaired utterance at unit RMS, cut at hop frame_len // 4
    own = torch.cat([frame_signal(normalize_speech(torch.tensor(x, dtype=torch.float32)), 64, 16) for x in unpaired])
    n_paired = trainer.speech_frames.shape[0]
    assert torch.equal(trainer.all_speech_frames[:n_paired], trainer.speech_frames)
    torch.testing.assert_close(trainer.all_speech_frames[n_paired:], own)
    seen = []
    trainer.speech_encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    trainer.fit()
    frames = torch.cat(seen)
    hit = (frames[:, None, :] - own[None]).abs().amax(-1).min(0).values < 1e-6  # each unpaired frame: seen?
    assert int(hit.sum()) > 0  # the speech encoder ran on unpaired frames (only the adversary draws them)
    assert len(seen) == 3 * (15 - 5)  # per phase-2 step: critic codes, reconstruction, adversarial codes


@pytest.mark.parametrize("bad, err, match", [
    (np.zeros(10), ValueError, "unpaired_speech"),  # shorter than a frame
    (np.zeros((1, 1, 400)), ValueError, "unpaired_speech"),
    (np.full(400, np.nan), ValueError, "unpaired_speech"),
    (np.zeros(400, dtype=complex), TypeError, "unpaired_speech"),
    ("speech", TypeError, "unpaired_speech"),
])
def test_bad_unpaired_speech(tmp_path, corpus, bad, err, match):
    with pytest.raises(err, match=match):
        SpeechToEGGTrainer(corpus[0].speech, corpus[0].egg, config=_config(tmp_path), unpaired_speech=bad)
