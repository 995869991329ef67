"""DistillTrainer on tiny models on CPU: batches, every mode, the student moving toward the teacher."""

from __future__ import annotations

import importlib.util
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import divmin
import divmin.distill._trainer as trainer_module
from divmin.distill import DistillConfig, DistillTrainer
from divmin.lm import LMCollator, tokenize_pairs
from divmin.engine import EngineConfig
from divmin.recipes.tiny_lm import PAD_ID, build_model, build_tokenizer, corpus

from .._resume import assert_resumes_exactly


def _engine(steps):
    return EngineConfig(max_steps=steps, log_every=steps, progress=False, tensorboard=False, max_grad_norm=None)


class _MLP(nn.Module):
    def __init__(self, d_in, width, classes, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, classes))

    def forward(self, x):
        return self.net(x)  # called as model(x) for rows with an "x" entry


def _cls_rows(n, seed, teacher):
    """Inputs labelled by the teacher's argmax, so hard and soft losses pull the same way."""
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = teacher(x).argmax(-1)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


@pytest.mark.parametrize("extra", [dict(divergence="reverse_kl"),
                                   dict(divergence="js", alpha=0.7, sinkd_weight=0.01, temperature=2.0,
                                        temperature_squared=True)])
def test_classifier_student_moves_toward_teacher(extra):
    teacher, student = _MLP(6, 32, 3, seed=0), _MLP(6, 8, 3, seed=1)
    with torch.no_grad():
        teacher.net[-1].weight.mul_(8.0)  # a confident teacher
    cfg = DistillConfig(task="sequence_classification", lr=3e-2, batch_size=32, engine=_engine(80), **extra)
    tr = DistillTrainer(student, teacher, _cls_rows(256, 0, teacher), eval_dataset=_cls_rows(128, 1, teacher),
                        config=cfg)
    before = tr.evaluate()
    result = tr.fit()
    after = tr.evaluate()
    assert after["divergence"] < 0.5 * before["divergence"], (before, after)
    assert after["teacher_agreement"] >= before["teacher_agreement"]
    assert "eval/divergence" in result.metrics and "soft" in result.metrics
    assert ("sinkd" in result.metrics) == ("sinkd_weight" in extra)
    assert all(not p.requires_grad for p in teacher.parameters())


def _lm_rows(n, seed):
    return [{"prompt": p, "completion": c + " [EOS]"} for p, c in corpus(n, seed, 0.2, 0.2, (2, 5))]


@torch.no_grad()
def _evaluate_by_hand(student, teacher, rows, divergence):
    """evaluate()'s metrics, one unpadded row at a time: CE by F.cross_entropy, the divergence as
    sum_v Q(v) f(P(v)/Q(v)) with the registry's f, agreement by argmax."""
    f = divmin.divergence(divergence).f
    ce, div, agree, n = 0.0, 0.0, 0.0, 0
    for r in rows:
        ids = torch.tensor([r["prompt_ids"] + r["completion_ids"]])
        lo, hi = len(r["prompt_ids"]) - 1, ids.shape[1] - 1  # logits at t predict token t + 1
        s, t = student(input_ids=ids).logits[0, lo:hi], teacher(input_ids=ids).logits[0, lo:hi]
        y = ids[0, lo + 1:hi + 1]
        log_q, log_p = torch.log_softmax(s.double(), -1), torch.log_softmax(t.double(), -1)
        ce += float(F.cross_entropy(s.double(), y, reduction="sum"))
        div += float((log_q.exp() * f(log_p - log_q)).sum())
        agree += float((s.argmax(-1) == t.argmax(-1)).sum())
        n += len(y)
    return {"ce": ce / n, "ppl": math.exp(ce / n), "divergence": div / n, "teacher_agreement": agree / n}


@pytest.mark.parametrize("mode", [dict(), dict(lmbda=1.0), dict(seq_kd=True, lmbda=0.5), dict(fused=True)])
def test_causal_lm_modes_reduce_the_divergence(mode, monkeypatch):
    tok = build_tokenizer()
    teacher, student = build_model(0, n_layer=2, n_embd=32), build_model(1, n_layer=1, n_embd=16)
    cfg = DistillConfig(divergence="js", lr=1e-2, batch_size=16, max_new_tokens=8, engine=_engine(30), **mode)
    tr = DistillTrainer(student, teacher, _lm_rows(128, 0), eval_dataset=_lm_rows(32, 1), tokenizer=tok, config=cfg)
    sampled_by = []  # which model sampled each batch of completions: the oracle of the on-policy fraction
    real = trainer_module.sample_completions
    monkeypatch.setattr(trainer_module, "sample_completions",
                        lambda model, *args, **kw: sampled_by.append(model is student) or real(model, *args, **kw))
    before = tr.evaluate()
    result = tr.fit()
    after = tr.evaluate()
    assert after["divergence"] < 0.7 * before["divergence"], (before, after)
    on_policy = sum(sampled_by)  # one micro-batch per step, 30 steps, one log at the end
    assert result.metrics["on_policy"] == pytest.approx(on_policy / 30)
    assert len(sampled_by) - on_policy == (30 if mode.get("seq_kd") else 0)  # teacher samples
    expected = {None: 0, 1.0: 30}.get(mode.get("lmbda"))
    assert (on_policy == expected) if expected is not None else (5 < on_policy < 25)  # lmbda = 0.5: about half
    for got in (before, after):
        want = _evaluate_by_hand(tr.model if got is after else build_model(1, n_layer=1, n_embd=16), teacher,
                                 tr.eval_rows, "js")
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_sampled_completions_come_from_the_step_generator_not_the_global_rng():
    """seq-KD then on-policy samples (GKD): a function of ctx.generator's state, whatever the global RNG."""
    tok = build_tokenizer()
    teacher, student = build_model(0, n_layer=1, n_embd=16), build_model(1, n_layer=1, n_embd=16)
    cfg = DistillConfig(lmbda=1.0, seq_kd=True, max_new_tokens=6)
    task = DistillTrainer(student, teacher, _lm_rows(8, 0), tokenizer=tok, config=cfg).make_task()
    batch = LMCollator(PAD_ID)(tokenize_pairs(_lm_rows(8, 0), tok))

    def draw(seed, global_seed):
        torch.manual_seed(global_seed)
        gen = torch.Generator().manual_seed(seed)
        ctx = SimpleNamespace(generator=gen, cpu_generator=gen, models={"teacher": teacher},
                              unwrap=lambda name: student)
        return task._completions(batch, ctx)[0]

    a, b, c = draw(0, 0), draw(0, 1), draw(1, 0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input_ids"], c["input_ids"])
    assert torch.equal(a["prompt_ids"], batch["prompt_ids"]) and not torch.equal(a["labels"], batch["labels"])


def test_on_policy_training_resumes_exactly(tmp_path):
    def run(out, steps, resume=False):
        engine = EngineConfig(max_steps=steps, log_every=1, progress=False, tensorboard=False, max_grad_norm=None,
                              out_dir=str(out), checkpoint_every=2, seed=0)
        cfg = DistillConfig(divergence="js", lr=1e-2, batch_size=8, max_new_tokens=6, lmbda=0.5, engine=engine)
        tr = DistillTrainer(build_model(1, n_layer=1, n_embd=16), build_model(0, n_layer=1, n_embd=16),
                            _lm_rows(32, 0), tokenizer=build_tokenizer(), config=cfg)
        result = tr.fit(resume=resume)
        return tr.model, result

    assert_resumes_exactly(run, tmp_path)


def test_fused_losses_equal_unfused():
    tok = build_tokenizer()
    teacher, student = build_model(0, n_layer=1, n_embd=32), build_model(1, n_layer=1, n_embd=16)
    batch = LMCollator(PAD_ID)([{"prompt_ids": tok(p)["input_ids"], "completion_ids": tok(c)["input_ids"]}
                                for p, c in corpus(8, 3, 0.2, 0.2, (2, 5))])
    out = {}
    # the Triton kernel runs in its interpreter on CPU (tests/conftest.py)
    backends = ["torch"] + (["triton"] if importlib.util.find_spec("triton") else [])
    # None (the default) resolves to the fused path for these models: same loss and gradients as unfused
    for fused, backend in [(False, "auto"), (None, "auto")] + [(True, b) for b in backends]:
        cfg = DistillConfig(divergence="reverse_kl", temperature=1.5, alpha=0.5, fused=fused, fused_backend=backend)
        tr = DistillTrainer(student, teacher, _lm_rows(4, 0), tokenizer=tok, config=cfg)
        assert tr._loss.fused is (fused is not False)
        parts = tr.losses(student, teacher, batch)
        total = 0.5 * parts["soft"] + 0.5 * parts["hard"]
        out[fused, backend] = (total.detach(), torch.autograd.grad(total, list(student.parameters())))
    ref = out.pop((False, "auto"))
    for got in out.values():
        torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-6)
        for a, b in zip(got[1], ref[1]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_default_fused_only_where_it_applies():
    tok = build_tokenizer()
    teacher, student = build_model(0, n_layer=1, n_embd=32), build_model(1, n_layer=1, n_embd=16)
    assert DistillTrainer(student, teacher, _lm_rows(4, 0), tokenizer=tok)._loss.fused
    sinkd = DistillConfig(sinkd_weight=0.1)  # SinKD reads the logits: the default stays unfused
    assert not DistillTrainer(student, teacher, _lm_rows(4, 0), tokenizer=tok, config=sinkd)._loss.fused
    biased = build_model(0, n_layer=1, n_embd=32)
    biased.lm_head = torch.nn.Linear(32, biased.lm_head.out_features)  # a bias: no fused form
    assert not DistillTrainer(student, biased, _lm_rows(4, 0), tokenizer=tok)._loss.fused
    with pytest.raises(ValueError, match="bias-free"):
        DistillTrainer(student, biased, _lm_rows(4, 0), tokenizer=tok, config=DistillConfig(fused=True)).losses(
            student, biased, LMCollator(PAD_ID)([{"prompt_ids": [3, 4], "completion_ids": [5, 6]}]))


def test_fused_default_trains_a_lora_student_like_unfused():
    """A peft-wrapped student fuses through the adapted model inside the wrapper: same loss and the
    same LoRA gradients as the unfused path; an adapter on the head itself leaves it unfused."""
    peft = pytest.importorskip("peft")
    tok = build_tokenizer()
    teacher = build_model(0, n_layer=1, n_embd=32)
    batch = LMCollator(PAD_ID)([{"prompt_ids": tok(p)["input_ids"], "completion_ids": tok(c)["input_ids"]}
                                for p, c in corpus(8, 3, 0.2, 0.2, (2, 5))])
    out = {}
    for fused in (False, None):
        torch.manual_seed(0)
        lora = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], init_lora_weights=False)
        student = peft.get_peft_model(build_model(1, n_layer=1, n_embd=16), lora)
        tr = DistillTrainer(student, teacher, _lm_rows(4, 0), tokenizer=tok,
                            config=DistillConfig(alpha=0.5, fused=fused))
        assert tr._loss.fused is (fused is None)
        parts = tr.losses(student, teacher, batch)
        total = parts["soft"] + parts["hard"]
        params = [p for n, p in student.named_parameters() if "lora_" in n]
        out[fused] = (total.detach(), torch.autograd.grad(total, params))
    torch.testing.assert_close(out[None][0], out[False][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(out[None][1], out[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    on_head = peft.get_peft_model(build_model(1, n_layer=1, n_embd=16),
                                  peft.LoraConfig(r=2, target_modules=["lm_head"]))
    assert not DistillTrainer(on_head, teacher, _lm_rows(4, 0), tokenizer=tok)._loss.fused
    # prompt tuning adds virtual tokens in the wrapper's forward: fused would bypass them
    prompt = peft.get_peft_model(build_model(1, n_layer=1, n_embd=16),
                                 peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    assert not DistillTrainer(prompt, teacher, _lm_rows(4, 0), tokenizer=tok)._loss.fused
    with pytest.raises(ValueError, match="prompt-learning"):
        DistillTrainer(prompt, teacher, _lm_rows(4, 0), tokenizer=tok,
                       config=DistillConfig(fused=True)).losses(prompt, teacher, batch)


@pytest.mark.parametrize("bad,err", [(dict(task="seq2seq"), "task"), (dict(alpha=1.5), "alpha"),
                                     (dict(divergence="nope"), "nope"), (dict(temperature=0), "temperature"),
                                     (dict(task="sequence_classification", lmbda=0.5), "lmbda"),
                                     (dict(batch_size=0), "batch_size"), (dict(sinkd_mode="x"), "sinkd_mode"),
                                     (dict(fused_backend="cuda"), "fused_backend")])
def test_bad_config(bad, err):
    with pytest.raises(ValueError, match=err):
        DistillConfig(**bad)


@pytest.mark.parametrize("fused", [False, True])
def test_alpha_one_neither_computes_nor_backpropagates_the_hard_loss(fused, monkeypatch):
    """With alpha = 1 the cross-entropy has no weight: it is not computed (no `hard` part), and the
    step's gradient is the soft loss's alone."""
    tok = build_tokenizer()
    teacher, student = build_model(0, n_layer=1, n_embd=32), build_model(1, n_layer=1, n_embd=16)
    batch = LMCollator(PAD_ID)([{"prompt_ids": tok(p)["input_ids"], "completion_ids": tok(c)["input_ids"]}
                                for p, c in corpus(4, 3, 0.2, 0.2, (2, 5))])
    calls = []
    monkeypatch.setattr(trainer_module.F, "cross_entropy", lambda *a, **k: calls.append(1) or F.cross_entropy(*a, **k))
    monkeypatch.setattr(trainer_module, "fused_linear_cross_entropy", lambda *a, **k: calls.append(1))
    cfg = DistillConfig(divergence="generalized_js", alpha=1.0, fused=fused, engine=_engine(1))
    tr = DistillTrainer(student, teacher, _lm_rows(4, 0), tokenizer=tok, config=cfg)
    parts = tr.losses(student, teacher, batch)
    assert set(parts) == {"soft"} and not calls
    ctx = SimpleNamespace(call=lambda name, fn, *args: fn(student, *args), models={"teacher": teacher},
                          generator=None, cpu_generator=torch.Generator().manual_seed(0))
    tr.config.lmbda = 0.0
    out = tr.make_task().train_step(batch, ctx)
    torch.testing.assert_close(out.loss, parts["soft"])
