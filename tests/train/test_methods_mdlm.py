"""divmin train mdlm: packing text into blocks, training, export and reload."""

import pytest
import torch

from divmin.train import config_from, export_run, load_exported, pack_texts, tiny_tokenizer, train


def test_pack_texts_concatenates_with_eos_and_drops_the_partial_block():
    tok = tiny_tokenizer()
    ids = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    stream = ids("count from one") + [tok.eos_token_id] + ids("two three") + [tok.eos_token_id]  # 7 tokens
    got = pack_texts(["count from one", "two three"], tok, 3)
    assert got.tolist() == [stream[0:3], stream[3:6]]
    with pytest.raises(ValueError, match="fewer than one sequence"):
        pack_texts(["one"], tok, 3)


def test_train_export_reload_same_log_probs(tmp_path):
    cfg = config_from("mdlm", None, ["width=16", "depth=1", "heads=2", "length=8", "mdlm.batch_size=8",
                                     "mdlm.engine.max_steps=3", "mdlm.engine.progress=False",
                                     "mdlm.engine.tensorboard=False"])
    run = train("mdlm", cfg, tmp_path / "run")
    final = tmp_path / "run" / "final"
    assert {p.name for p in run.files} >= {"config.json", "model.safetensors", "tokenizer.json"}
    z = torch.tensor([[3, 40, 5, 40, 7, 1, 40, 9]])  # 40 = the mask id (vocabulary of 40)
    t = torch.tensor([0.5])
    model = load_exported(final)
    assert type(model).__name__ == "MaskedDiffusionLM" and model.mask_id == 40
    with torch.no_grad():
        want = run.model.eval()(z, t)
        torch.testing.assert_close(model(z, t), want, rtol=0, atol=0)
        (final / "model.safetensors").unlink()
        export_run(tmp_path / "run")
        torch.testing.assert_close(load_exported(final)(z, t), want, rtol=0, atol=0)


def test_text_column_is_required(tmp_path, capsys):
    from divmin.cli import main

    (tmp_path / "d.jsonl").write_text('{"prompt": "one"}\n')
    assert main(["train", "mdlm", "--out", str(tmp_path / "o"), "--set", f"data={tmp_path / 'd.jsonl'}"]) == 2
    assert "missing column(s) ['text']: mdlm needs text" in capsys.readouterr().err
