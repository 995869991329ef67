"""Teacher caches never mix two teachers, name a damaged file, refuse rows the teacher cannot read, and never
write through a link (issue 26 s.2, s.4, s.5)."""

from __future__ import annotations

import json

import pytest
import torch

from divmin.cli import main
from divmin.distill import TeacherCache, cache_teacher
from divmin.lm import tiny_gpt2

V = 40
KW = dict(top_k=5, dtype="int8", rows_per_shard=4, batch_size=2, teacher_name="t")


def _teacher(seed=0):
    return tiny_gpt2(V, seed=seed, n_layer=1, n_embd=16, n_positions=16)


def _rows(n=8):
    g = torch.Generator().manual_seed(0)
    return [{"prompt_ids": torch.randint(2, V, (2,), generator=g).tolist(),
             "completion_ids": torch.randint(2, V, (1 + i % 3,), generator=g).tolist()} for i in range(n)]


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def _lose_shard_1_and_the_manifest(d):
    for name in ("shard-00001.safetensors", "shard-00001.safetensors.json", "manifest.json"):
        (d / name).unlink()


def test_a_retrained_teacher_of_the_same_name_does_not_resume_another_teachers_cache(tmp_path):
    cache = tmp_path / "cache"
    cache_teacher(_teacher(0), _rows(), cache, **KW)
    _lose_shard_1_and_the_manifest(cache)
    retrained = _teacher(1)  # same name "t", other weights
    with pytest.raises(ValueError, match=r"`teacher`: its weights differ .*teacher_sha256"):
        cache_teacher(retrained, _rows(), cache, **KW)
    assert not (cache / "shard-00001.safetensors").exists()  # nothing of the new teacher was written
    cache_teacher(_teacher(0), _rows(), cache, **KW)  # the same teacher (a new object) resumes
    cache_teacher(_teacher(0), _rows(), tmp_path / "clean", **KW)
    assert _files(tmp_path / "clean") == _files(cache)


def test_the_fingerprint_sees_one_changed_weight_also_in_a_large_or_bfloat16_tensor():
    from divmin.distill._cache import teacher_fingerprint

    a, b = _teacher(0), _teacher(0)
    assert teacher_fingerprint(a) == teacher_fingerprint(b)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-3
    assert teacher_fingerprint(a) != teacher_fingerprint(b)
    big = torch.nn.Linear(2048, 1024, bias=False).to(torch.bfloat16)  # 2^21 elements: the strided sample
    before = teacher_fingerprint(big)
    assert teacher_fingerprint(big) == before
    with torch.no_grad():
        big.weight.view(-1)[2] += 1  # an element of the sample (every 2nd)
    assert teacher_fingerprint(big) != before


def test_a_damaged_shard_record_is_rewritten(tmp_path):
    cache_teacher(_teacher(), _rows(), tmp_path / "one", **KW)
    cache_teacher(_teacher(), _rows(), tmp_path / "two", **KW)
    (tmp_path / "two" / "shard-00001.safetensors.json").write_text("x\n")  # echo x > ...json
    (tmp_path / "two" / "manifest.json").unlink()
    cache_teacher(_teacher(), _rows(), tmp_path / "two", **KW)
    assert _files(tmp_path / "two") == _files(tmp_path / "one")


def test_a_damaged_plan_or_manifest_is_named(tmp_path, capsys):
    cache_teacher(_teacher(), _rows(), tmp_path, **KW)
    (tmp_path / "manifest.json").write_text("x\n")
    with pytest.raises(ValueError, match=r"manifest.json is damaged"):
        TeacherCache(tmp_path)
    (tmp_path / "plan.json").write_text("x\n")
    with pytest.raises(ValueError, match=r"plan.json is damaged .*delete the cache directory"):
        cache_teacher(_teacher(), _rows(), tmp_path, **KW)


def test_verify_false_on_a_truncated_shard_names_the_shard(tmp_path):
    cache_teacher(_teacher(), _rows(), tmp_path, **KW)
    shard = tmp_path / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-5])
    cache = TeacherCache(tmp_path, verify=False)
    assert cache([0, 1]).log_probs.shape[0] > 0  # shard 0 is intact and still serves
    with pytest.raises(ValueError, match=r"shard-00001.safetensors is unreadable"):
        cache([5])


@pytest.mark.parametrize("row, match", [
    ({"prompt_ids": [2, V], "completion_ids": [3]}, rf"row 1: token id {V} is outside the teacher's vocabulary"),
    ({"prompt_ids": [2, 3], "completion_ids": [V + 7]}, rf"token id {V + 7} is outside"),
    ({"prompt_ids": [2] * 10, "completion_ids": [3] * 7}, r"row 1 has 17 tokens; the teacher reads at most 16"),
])
def test_rows_the_teacher_cannot_read_are_refused_naming_the_row(tmp_path, row, match):
    with pytest.raises(ValueError, match=match):
        cache_teacher(_teacher(), [_rows(1)[0], row], tmp_path, top_k=3)
    assert not (tmp_path / "plan.json").exists()


@pytest.mark.parametrize("name", ["plan.json", "shard-00000.safetensors", "shard-00000.safetensors.json",
                                  "manifest.json"])
def test_a_link_in_the_cache_directory_is_refused_and_its_target_kept(tmp_path, name):
    victim, out = tmp_path / "victim", tmp_path / "cache"
    victim.write_text("precious\n")
    out.mkdir()
    (out / name).symlink_to(victim)
    with pytest.raises(OSError, match=f"{name}: it is a symbolic link"):
        cache_teacher(_teacher(), _rows(), out, **KW)
    assert victim.read_text() == "precious\n"


# ------------------------------------------------------------------ the command line: one line, exit 2
@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    _teacher().save_pretrained(d / "teacher")
    (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    return d


def _cli(d, teacher, out, *extra):
    return main(["distill", "cache", "--teacher", str(teacher), "--data", str(d / "rows.jsonl"), "--out", str(out),
                 "--top-k", "4", *extra])


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7")
@pytest.mark.parametrize("device, match", [("cuda:7", "`--device` cuda:7"), ("gpu0", "`--device` 'gpu0' is not")])
def test_a_device_this_machine_lacks_is_one_line(teacher_dir, tmp_path, capsys, device, match):
    assert _cli(teacher_dir, teacher_dir / "teacher", tmp_path / "c", "--device", device) == 2
    err = capsys.readouterr().err
    assert err.startswith("divmin: error: ") and match in err and err.count("\n") == 1  # before the teacher loads


def test_a_pickle_checkpoint_is_refused_in_one_line_and_never_run(teacher_dir, tmp_path, capfd):
    bad = tmp_path / "pickled"
    (bad).mkdir()
    (bad / "config.json").write_text((teacher_dir / "teacher" / "config.json").read_text())

    class Payload:
        def __reduce__(self):
            return (print, ("PAYLOAD RAN",))

    torch.save({"transformer.wte.weight": Payload()}, bad / "pytorch_model.bin")
    assert _cli(teacher_dir, bad, tmp_path / "c", "--device", "cpu") == 2
    captured = capfd.readouterr()
    assert "PAYLOAD RAN" not in captured.out + captured.err
    err = captured.err.strip().splitlines()[-1]
    assert err.startswith("divmin: error: `--teacher`") and "pickle" in err and "Traceback" not in captured.err


def test_a_damaged_cache_file_through_the_cli_is_one_line_naming_it(teacher_dir, tmp_path, capsys):
    assert _cli(teacher_dir, teacher_dir / "teacher", tmp_path / "c", "--device", "cpu") == 0
    (tmp_path / "c" / "plan.json").write_text("x\n")
    capsys.readouterr()
    assert _cli(teacher_dir, teacher_dir / "teacher", tmp_path / "c", "--device", "cpu") == 2
    err = capsys.readouterr().err  # after transformers' own "Loading weights" bar
    assert "Traceback" not in err and err.splitlines()[-1].startswith("divmin: error: ")
    assert "plan.json is damaged" in err.splitlines()[-1]
