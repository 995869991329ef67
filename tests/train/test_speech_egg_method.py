"""divmin train speech_egg: the synthetic corpus at the tiny defaults, export and reload of speech -> EGG."""

import numpy as np
import pytest
import torch

from divmin.speech import SpeechEGGNet, SpeechEGGTrainConfig, synthesize
from divmin.train import config_from, print_config, train

from ._export_check import assert_export_reloads


def test_train_export_reload_same_egg(tmp_path):
    cfg = config_from("speech_egg", None, ["speech_egg.engine.progress=False", "speech_egg.engine.tensorboard=False"])
    run = train("speech_egg", cfg, tmp_path / "run")
    assert {p.name for p in run.files} == {"config.json", "model.safetensors"}
    u = synthesize(0.5, sample_rate=8000.0, voice="modal", snr_db=10.0, seed=123)  # not in the training corpus
    speech = torch.tensor(u.speech, dtype=torch.float32)
    # re-export reads two engine models (speech encoder, decoder) from the checkpoint
    net = assert_export_reloads(run.model, tmp_path / "run", lambda m: m.predict(speech))
    assert isinstance(net, SpeechEGGNet)
    want = run.trainer.predict(u.speech)  # the trainer's own prediction path
    torch.testing.assert_close(net.predict(speech), want, rtol=0, atol=0)
    # it has learnt the EGG: 0.94 at seed 0 (an untrained network: about 0)
    assert np.corrcoef(want.numpy(), u.egg)[0, 1] > 0.7


def test_config_nests_the_method():
    text = print_config("speech_egg")
    assert "\nspeech_egg:\n" in text and "\nutterances: 12\n" in text
    cfg = config_from("speech_egg", None, ["speech_egg.adv_weight=0", "voices=('creaky',)"])
    assert cfg.speech_egg.adv_weight == 0 and cfg.voices == ("creaky",)
    with pytest.raises(ValueError, match=r"`voices\[0\]` must be one of"):
        SpeechEGGTrainConfig(voices=("whisper",))
