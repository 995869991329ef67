"""FDPOTrainer on a tiny GPT-2: data pipeline, training, resume, LoRA, precomputed reference.

``sequence_logps`` itself is tested in tests/lm/test_logps.py."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from divmin.align._fdpo_trainer import FDPOConfig, FDPOTrainer
from divmin.eval import top_label_calibration_error as expected_calibration_error
from divmin.align._preference_data import PreferenceCollator, tokenize_preferences
from divmin.engine import EngineConfig
from divmin.lm import sequence_logps

from . import _tiny

LOG2 = math.log(2.0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The models are tiny: one intra-op thread is as fast and immune to oversubscribed CPUs."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _config(steps=60, **kw) -> FDPOConfig:
    engine = dict(max_steps=steps, log_every=1, progress=False, tensorboard=False)
    engine.update(kw.pop("engine", {}))
    base = dict(beta=0.1, lr=1e-3, batch_size=8, max_length=32, max_prompt_length=12)
    return FDPOConfig(**{**base, **kw}, engine=EngineConfig(**engine))


def _trainer(config, model=None, n=96, **kw) -> FDPOTrainer:
    return FDPOTrainer(model if model is not None else _tiny.model(), _tiny.tokenizer(),
                       _tiny.preference_rows(n), config=config, **kw)


# ------------------------------------------------------------------- data
def test_collate_concatenates_chosen_then_rejected_and_masks_prompts():
    examples = [{"index": 0, "prompt_ids": [5, 6], "chosen_ids": [7], "rejected_ids": [8, 9, 1]},
                {"index": 3, "prompt_ids": [4], "chosen_ids": [7, 1], "rejected_ids": [2]}]
    batch = PreferenceCollator(pad_token_id=0)(examples)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0], [4, 7, 1, 0, 0], [5, 6, 8, 9, 1], [4, 2, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    # aligned with the logits: labels[:, t] is the response token at column t + 1
    assert batch["labels"].tolist() == [[-100, 7, -100, -100, -100], [7, 1, -100, -100, -100],
                                        [-100, 8, 9, 1, -100], [2, -100, -100, -100, -100]]
    assert batch["index"].tolist() == [0, 3]


def test_tokenize_truncates_prompt_left_and_response_right_and_appends_eos():
    tok = _tiny.tokenizer()
    row = {"prompt": "question about cats and dogs ?", "chosen": "answer good .", "rejected": "bad"}
    (ex,) = tokenize_preferences([row], tok, max_length=6, max_prompt_length=3)
    assert tok.convert_ids_to_tokens(ex["prompt_ids"]) == ["[UNK]", "dogs", "?"]  # "and" is out of vocabulary
    assert tok.convert_ids_to_tokens(ex["chosen_ids"]) == ["answer", "good", "."]  # EOS cut by max_length
    assert tok.convert_ids_to_tokens(ex["rejected_ids"]) == ["bad", "[EOS]"]


def test_list_jsonl_and_datasets_sources_agree(tmp_path):
    import datasets

    rows, tok = _tiny.preference_rows(5), _tiny.tokenizer()
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kw = dict(max_length=32, max_prompt_length=12)
    ref = tokenize_preferences(rows, tok, **kw)
    assert tokenize_preferences(str(path), tok, **kw) == ref
    assert tokenize_preferences(datasets.Dataset.from_list(rows), tok, **kw) == ref
    assert [e["index"] for e in ref] == list(range(5))


def test_conversational_rows_plain_join_and_chat_template():
    tok, (row,) = _tiny.tokenizer(), _tiny.preference_rows(1, conversational=True)
    content = row["chosen"][0]["content"].split()
    (ex,) = tokenize_preferences([row], tok, max_length=40, max_prompt_length=20)
    assert tok.convert_ids_to_tokens(ex["prompt_ids"])[:3] == ["user", ":", "question"]
    assert tok.convert_ids_to_tokens(ex["chosen_ids"]) == ["assistant", ":", *content, "[EOS]"]
    tok.chat_template = _tiny.CHAT_TEMPLATE
    (ex,) = tokenize_preferences([row], tok, max_length=40, max_prompt_length=20)
    prompt = tok.convert_ids_to_tokens(ex["prompt_ids"])
    assert prompt[:3] == ["<", "user", ">"] and prompt[-3:] == ["<", "assistant", ">"]  # generation prompt
    assert tok.convert_ids_to_tokens(ex["chosen_ids"]) == content  # template text only, no EOS added


def test_ece_matches_a_hand_computation():
    p = torch.tensor([0.9, 0.8, 0.3, 0.55])
    # confidences .9 .8 .7 .55 in four bins; the 0.3 prediction is wrong
    assert expected_calibration_error(p, torch.ones(4)).item() == pytest.approx((0.1 + 0.2 + 0.7 + 0.45) / 4)
    # one shared bin: accuracy 1/2 against mean confidence 0.95
    assert expected_calibration_error(torch.tensor([0.92, 0.98]), torch.tensor([1.0, 0.0])).item() == pytest.approx(0.45)


# --------------------------------------------------------------- training
@pytest.mark.parametrize("divergence", ["reverse_kl", "js"])
def test_training_learns_the_preference_and_logs_calibration(divergence):
    cfg = _config(60, divergence=divergence, engine=dict(eval_every=60))
    result = _trainer(cfg, eval_dataset=_tiny.preference_rows(32, seed=1)).fit()
    hist = result.history
    assert hist[0]["loss"] == pytest.approx(LOG2, abs=1e-5) and hist[0]["rewards/accuracies"] == 0.0
    assert hist[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at step 1
    late = hist[-10:]
    assert sum(h["loss"] for h in late) / 10 < 0.5
    assert sum(h["rewards/accuracies"] for h in late) / 10 > 0.9
    assert all(h["rewards/chosen"] > h["rewards/rejected"] for h in late)
    keys = {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
            "logps/chosen", "logps/rejected"}
    assert keys <= set(hist[-1])
    m = result.metrics
    assert "eval/ece" in m and m["eval/accuracy"] > 0.9 and m["eval/loss"] < 0.5  # ECE: see the next test


def test_eval_metrics_match_a_direct_computation():
    tr = _trainer(_config(5), eval_dataset=_tiny.preference_rows(12, seed=2))
    result = tr.fit()
    batch = tr.collator(tr.eval_examples)
    pol, ref = tr.batch_logps(batch)
    margin = 0.1 * ((pol[:12] - ref[:12]) - (pol[12:] - ref[12:]))  # reverse KL: DPO rewards
    p = torch.sigmoid(margin)
    assert result.metrics["eval/loss"] == pytest.approx(-torch.nn.functional.logsigmoid(margin).mean().item(), rel=1e-4)
    assert result.metrics["eval/ece"] == pytest.approx(expected_calibration_error(p, torch.ones(12)).item(), abs=1e-5)
    assert result.metrics["eval/accuracy"] == pytest.approx((margin > 0).float().mean().item())


@pytest.mark.parametrize("reference", ["copy", "precomputed"])
def test_resume_replays_the_uninterrupted_run(tmp_path, reference):
    def run(out, steps, resume, seed=0):
        eng = dict(out_dir=str(tmp_path / out), checkpoint_every=5, log_every=2, eval_every=4)
        cfg = _config(steps, reference=reference, engine=eng)
        return _trainer(cfg, model=_tiny.model(seed), eval_dataset=_tiny.preference_rows(8, seed=3)).fit(resume=resume)

    full = run("full", 14, False)
    run("split", 6, False)  # an interrupted run: checkpoints at 5 and 6
    # continues from step 6; the policy comes from the checkpoint, and so must the cached
    # reference log-probs: a differently initialised model must not change them
    resumed = run("split", 14, True, seed=5 if reference == "precomputed" else 0)
    assert [h["step"] for h in resumed.history] == [8, 10, 12, 14]
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in lines if "step" in r}
    for record in resumed.history:
        expected = by_step[record["step"]]
        assert set(record) <= set(expected)
        for key, value in record.items():
            assert value == pytest.approx(expected[key], rel=1e-5, abs=1e-6), (record["step"], key)
    assert full.metrics["loss"] == pytest.approx(resumed.metrics["loss"], rel=1e-5)


def test_lora_adapter_reference_is_the_base_model():
    peft = pytest.importorskip("peft")
    base_twin = _tiny.model().eval()  # same seed: an untouched copy of the base weights
    lora = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True,
                           lora_dropout=0.0)
    model = peft.get_peft_model(_tiny.model(), lora)
    cfg = _config(40, reference="adapter", lr=1e-2, beta=0.5)
    tr = _trainer(cfg, model=model)
    hist = tr.fit().history
    assert hist[0]["loss"] == pytest.approx(LOG2, abs=1e-5)
    assert sum(h["loss"] for h in hist[-5:]) / 5 < 0.55
    assert sum(h["rewards/accuracies"] for h in hist[-5:]) / 5 > 0.9
    batch = tr.collator(tr.train_examples[:6])
    pol, ref = tr.batch_logps(batch)
    base = sequence_logps(base_twin(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                          batch["labels"])
    torch.testing.assert_close(ref, base.detach(), rtol=1e-5, atol=1e-5)
    assert (pol - ref).abs().max() > 0.1  # the adapter did learn something


def test_precomputed_reference_gives_the_copy_path_trajectory():
    ref_model = _tiny.model(seed=1)  # a reference unlike the policy: the loss is not log 2
    runs = {}
    for mode in ("copy", "precomputed"):
        tr = _trainer(_config(3, reference=mode), ref_model=copy.deepcopy(ref_model))
        runs[mode] = [h["loss"] for h in tr.fit().history]
    assert abs(runs["copy"][0] - LOG2) > 1e-3
    assert runs["precomputed"] == pytest.approx(runs["copy"], rel=1e-5)
    assert tr.cache["train"].shape == (96, 2) and tr.reference is not None


def test_precomputed_reference_without_ref_model_uses_the_initial_policy():
    tr = _trainer(_config(4, reference="precomputed"))
    initial = copy.deepcopy(tr.model)
    hist = tr.fit().history
    assert hist[0]["loss"] == pytest.approx(LOG2, abs=1e-5) and hist[-1]["loss"] < hist[0]["loss"]
    batch = tr.collator(tr.train_examples[:4])
    with torch.no_grad():
        lp = sequence_logps(initial(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                            batch["labels"])
    torch.testing.assert_close(tr.batch_logps(batch)[1], lp, rtol=1e-5, atol=1e-5)


def test_conversational_rows_train():
    rows = _tiny.preference_rows(64, conversational=True)
    cfg = _config(30, max_length=40, max_prompt_length=16)
    tr = FDPOTrainer(_tiny.model(), _tiny.tokenizer(), rows, config=cfg)
    hist = tr.fit().history
    assert sum(h["rewards/accuracies"] for h in hist[-5:]) / 5 > 0.9 and hist[-1]["loss"] < 0.6


# ------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("kwargs, match", [
    (dict(beta=0.0), "beta"),
    (dict(label_smoothing=0.5), "label_smoothing"),
    (dict(reference="frozen"), "reference"),
    (dict(max_length=8, max_prompt_length=8), "max_prompt_length"),
    (dict(batch_size=0), "batch_size"),
    (dict(divergence="total_variation"), "divergence"),
])
def test_bad_config_names_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FDPOConfig(**kwargs)


def test_bad_trainer_arguments_name_the_argument():
    tok, rows, cfg = _tiny.tokenizer(), _tiny.preference_rows(4), _config(1)
    with pytest.raises(ValueError, match="train_dataset.*missing field 'chosen'"):
        FDPOTrainer(_tiny.model(), tok, [{"prompt": "a", "rejected": "b"}], config=cfg)
    with pytest.raises(ValueError, match="eval_dataset.*'rejected'"):
        FDPOTrainer(_tiny.model(), tok, rows, eval_dataset=[{"prompt": "a", "chosen": "b", "rejected": 3}], config=cfg)
    with pytest.raises(ValueError, match="content"):
        FDPOTrainer(_tiny.model(), tok, [{"prompt": [{"role": "user"}], "chosen": [], "rejected": []}], config=cfg)
    with pytest.raises(TypeError, match="train_dataset"):
        FDPOTrainer(_tiny.model(), tok, 42, config=cfg)
    with pytest.raises(ValueError, match="reference"):
        FDPOTrainer(_tiny.model(), tok, rows, config=_config(1, reference="adapter"))
    with pytest.raises(TypeError, match="model"):
        FDPOTrainer("gpt2", tok, rows, config=cfg)
    with pytest.raises(ValueError, match="ref_model"):
        m = _tiny.model()
        FDPOTrainer(m, tok, rows, ref_model=m, config=cfg)


def test_a_policy_with_one_nan_weight_stops_the_run_instead_of_saving_nan(tmp_path):
    from divmin.engine import NonFiniteError

    model = _tiny.model()
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    cfg = _config(steps=3, engine=dict(out_dir=str(tmp_path), checkpoint_every=1))
    with pytest.raises(NonFiniteError, match="step 0: .*`policy_chosen_logps` contains NaN.*of model 'policy' holds NaN"):
        _trainer(cfg, model=model).fit()
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())
