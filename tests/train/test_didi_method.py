"""divmin train didi: DiDi-Instruct from the toy teacher (tiny defaults) or an exported `divmin train mdlm` run."""


import pytest
import torch

from divmin.diffusion import DiDiTrainConfig, MaskedDiffusionLM
from divmin.eval import generative_perplexity
from divmin.train import config_from, print_config, train

from ._export_check import assert_export_reloads

_QUIET = ["didi.engine.progress=False", "didi.engine.tensorboard=False"]


def _outputs(model):
    z = torch.tensor([[3, 16, 5, 16, 7, 1, 16, 9], [16] * 8])  # 16 = the mask id (vocabulary of 16)
    return model(z, torch.tensor([0.5, 1.0]))


def test_toy_teacher_train_export_reload_same_student(tmp_path):
    cfg = config_from("didi", None, _QUIET)
    run = train("didi", cfg, tmp_path / "run")
    assert {p.name for p in run.files} == {"config.json", "model.safetensors"}
    assert run.model is run.trainer.student_ema  # the EMA student is exported, not the raw one
    student = assert_export_reloads(run.model, tmp_path / "run", _outputs)
    assert isinstance(student, MaskedDiffusionLM) and student.mask_id == 16
    # the student samples the Markov language far better than chance (uniform tokens: ppl 86; the
    # chain's own: 4.0; the toy teacher at 4 steps: 13.5, the student 14.7)
    lang = cfg.toy_teacher.language()
    x = student.sample(256, nfe=4, generator=torch.Generator().manual_seed(0))
    assert generative_perplexity(x, lang) < 25
    assert generative_perplexity(torch.randint(16, (256, 8), generator=torch.Generator().manual_seed(0)), lang) > 50


def test_teacher_from_an_mdlm_run(tmp_path):
    mdlm = config_from("mdlm", None, ["width=16", "depth=1", "heads=2", "length=8", "mdlm.batch_size=8",
                                      "mdlm.engine.max_steps=2", "mdlm.engine.progress=False",
                                      "mdlm.engine.tensorboard=False"])
    teacher = train("mdlm", mdlm, tmp_path / "mdlm").model.eval()
    cfg = config_from("didi", None, _QUIET + [f"teacher={tmp_path / 'mdlm' / 'final'}", "didi.engine.max_steps=2",
                                              "didi.teacher_pool=16", "didi.teacher_nfe=2", "didi.batch_size=8",
                                              "didi.disc_warmup=0", "didi.disc_trainable_blocks=1"])
    run = train("didi", cfg, tmp_path / "run")
    assert {p.name for p in run.files} >= {"config.json", "model.safetensors", "tokenizer.json"}
    z, t = torch.tensor([[3, 40, 5, 40, 7, 1, 40, 9]]), torch.tensor([0.5])  # 40 = the mask id (vocabulary of 40)
    student = assert_export_reloads(run.model, tmp_path / "run", lambda m: m(z, t))
    assert isinstance(student, MaskedDiffusionLM) and student.vocab_size == teacher.vocab_size
    with torch.no_grad():
        assert not torch.equal(student(z, t), teacher(z, t))  # it moved away from the teacher it started at


def test_config_nests_the_method_and_checks_the_teacher(tmp_path):
    text = print_config("didi")
    assert "\nteacher: null\n" in text and "\ntoy_teacher:\n" in text and "\ndidi:\n" in text
    with pytest.raises(ValueError, match="`toy_teacher.width`|`width`"):
        config_from("didi", None, ["toy_teacher.width=30", "toy_teacher.heads=4"])
    (tmp_path / "nope").mkdir()
    cfg = DiDiTrainConfig(teacher=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="`teacher` .*no readable config.json"):
        train("didi", cfg, tmp_path / "run")
