"""Recipe ``speech-egg`` at tiny settings: the table's shape, consistent summary, the figure, bad config."""

from __future__ import annotations

import json

import numpy as np
import pytest

from divmin.engine import parse_overrides
from divmin.recipes import run_recipe
from divmin.recipes.speech_egg import SpeechEGGConfig

from ._figures import assert_close_lists, check_figure

TINY = ["speech.engine.progress=False", "speech.engine.tensorboard=False", "speech.engine.max_steps=20",
        "speech.engine.log_every=10", "train_utterances=2", "duration=0.3", 'test_voices=("creaky", "modal")',
        "test_snr_db=(5.0, 0.0)", 'test_channels=("telephone",)', "test_utterances=1", "speech.hidden=4",
        "speech.frame_len=64", "speech.hop=16", "speech.batch_size=4"]


def test_speech_egg_recipe_smoke(tmp_path):
    result = run_recipe("speech-egg", tmp_path, TINY)
    assert result.columns == ["method", "condition", "idr", "mr", "far", "ida_ms"]
    conds = ["creaky/telephone/5dB", "creaky/telephone/0dB", "modal/telephone/5dB", "modal/telephone/0dB"]
    assert [(r["method"], r["condition"]) for r in result.rows] == [(m, c) for c in conds
                                                                      for m in ("model", "no-adversary", "zff")]
    for r in result.rows:
        assert r["idr"] + r["mr"] + r["far"] == pytest.approx(1.0)
        assert all(0 <= r[k] <= 1 for k in ("idr", "mr", "far"))
    s = result.summary
    for m in ("model", "no-adversary", "zff"):
        assert s["mean_idr"][m] == pytest.approx(np.mean([r["idr"] for r in result.rows if r["method"] == m]))
    assert s["model_beats_zff"] == (s["mean_idr"]["model"] > s["mean_idr"]["zff"])
    assert s["adversary_helps"] == (s["mean_idr"]["model"] > s["mean_idr"]["no-adversary"])
    idr = {(r["method"], r["condition"]): r["idr"] for r in result.rows}
    assert s["model_beats_zff_in"] == [c for c in conds if idr["model", c] > idr["zff", c]]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["plots"] == [str(tmp_path / "speech_egg.png"), str(tmp_path / "speech_egg_frame.png")]
    claim = check_figure(tmp_path / "speech_egg.png")  # IDR per condition and method, ZFF the baseline
    assert claim["data"]["conditions"] == conds and "ZFF (baseline)" in claim["legend"]
    for m in ("model", "no-adversary", "zff"):
        assert_close_lists(claim["data"]["idr"][m], [idr[m, c] for c in conds])
        assert claim["data"]["mean_idr"][m] == pytest.approx(s["mean_idr"][m])
    figure = check_figure(tmp_path / "speech_egg_frame.png")
    data = figure["data"]
    assert len(data["speech"]) == len(data["egg"]) == len(data["model"]) == len(data["no-adversary"]) == 64
    assert (tmp_path / "no-adversary" / "metrics.jsonl").stat().st_size > 0
    assert "scarce" not in s and "idr_sd" not in claim["data"]  # scarce_seeds=() by default: today's table


def test_speech_egg_scarce_pairs(tmp_path):
    result = run_recipe("speech-egg", tmp_path, TINY + ["train_utterances=4", "paired_fraction=0.25",
                                                        "scarce_seeds=(0, 3)", 'test_voices=("modal",)'])
    assert result.columns == ["method", "condition", "idr", "mr", "far", "ida_ms", "idr_sd"]
    conds = ["modal/telephone/5dB", "modal/telephone/0dB"]
    scarce = [r for r in result.rows if r["method"].endswith("-scarce")]
    assert [(r["method"], r["condition"]) for r in scarce] == [(m, c) for c in conds
                                                                 for m in ("model-scarce", "no-adversary-scarce")]
    assert all(r["idr_sd"] is None for r in result.rows if r not in scarce)
    sc = result.summary["scarce"]
    assert (sc["paired_utterances"], sc["unpaired_utterances"], sc["seeds"]) == (1, 3, [0, 3])
    for m in ("model-scarce", "no-adversary-scarce"):
        per_seed = sc["mean_idr_per_seed"][m]
        assert len(per_seed) == 2
        assert sc["mean_idr"][m] == pytest.approx(np.mean(per_seed))
        assert sc["mean_idr_sd"][m] == pytest.approx(np.std(per_seed))
        # the rows' IDR is the mean over seeds, so the mean over conditions of the rows is that of the seeds
        assert np.mean([r["idr"] for r in scarce if r["method"] == m]) == pytest.approx(np.mean(per_seed))
        assert all(r["idr_sd"] >= 0 for r in scarce)
        other = sc["other_per_seed"][m]
        assert np.mean(other["mr"]) == pytest.approx(np.mean([r["mr"] for r in scarce if r["method"] == m]))
        assert all(len(v) == 2 for v in other.values())
    helps = [a > b for a, b in zip(*sc["mean_idr_per_seed"].values())]
    assert sc["adversary_helps_seeds"] == sum(helps)
    for m in ("model-scarce", "no-adversary-scarce"):
        for seed in (0, 3):
            assert (tmp_path / f"{m}-seed{seed}" / "metrics.jsonl").stat().st_size > 0
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert len(timing["cpu_s"]["model-scarce"]) == 2 and timing["cpu_s"]["model"] > 0
    claim = check_figure(tmp_path / "speech_egg.png")  # the scarce methods drawn with their spread over seeds
    assert any("model-scarce" in label and "2 seeds" in label for label in claim["legend"])
    for m in ("model-scarce", "no-adversary-scarce"):
        mine = [r for r in scarce if r["method"] == m]
        assert_close_lists(claim["data"]["idr"][m], [r["idr"] for r in mine])
        assert_close_lists(claim["data"]["idr_sd"][m], [r["idr_sd"] for r in mine])
        assert claim["data"]["mean_idr"][m] == pytest.approx(sc["mean_idr"][m])


@pytest.mark.parametrize("overrides, name", [
    (["test_voices=('falsetto',)"], "test_voices"), (["train_channels=('radio',)"], "train_channels"),
    (["speech.adv_weight=0.0"], "adv_weight"), (["speech.divergence=nope"], "divergence"),
    (["sample_rate=4000.0"], "sample_rate"), (["paired_fraction=1.0"], "paired_fraction"),
    (["paired_fraction=0.0"], "paired_fraction"), (["scarce_seeds=(-1,)"], "scarce_seeds"),
    # set per run from the fractions / the seed: refused rather than silently replaced
    (["speech.ae_steps=10"], "from `ae_fraction`"), (["speech.adv_warmup=10"], "from `adv_warmup_fraction`"),
    (["speech.engine.seed=1"], "from `seed`"),
])
def test_speech_egg_config_bad_input(overrides, name):
    with pytest.raises(ValueError, match=name):
        parse_overrides(SpeechEGGConfig(), overrides)
