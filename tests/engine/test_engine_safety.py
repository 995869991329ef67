"""Nothing a run writes follows a link out of its directory; a checkpoint manifest that was altered is caught."""

from __future__ import annotations

import json

import pytest
import torch
from engine_toys import RegressionTask, quiet_config

from divmin.engine import Trainer, latest_checkpoint, run_lock, verify_checkpoint


@pytest.fixture
def victim(tmp_path):
    """A file outside the run directory that a link inside it points at."""
    path = tmp_path / "victim"
    path.write_text("precious\n")
    return path


def _fit(out, max_steps=2, resume=False, **kw):
    trainer = Trainer(RegressionTask(), quiet_config(max_steps=max_steps, out_dir=out, **kw))
    return trainer, trainer.fit(resume=resume)


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.models["net"].state_dict().items()}


# ------------------------------------------------------------------ links
def test_a_link_at_the_lock_name_is_refused_and_its_target_kept(tmp_path, victim):
    out = tmp_path / "o"
    out.mkdir()
    (out / ".divmin.lock").symlink_to(victim)
    with pytest.raises(OSError, match=r"\.divmin\.lock: it is a symbolic link"):
        with run_lock(out):
            pass
    with pytest.raises(OSError, match="symbolic link"):
        _fit(out)
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("resume", [False, True])
def test_a_link_at_metrics_jsonl_is_refused_fresh_or_resumed(tmp_path, victim, resume):
    out = tmp_path / "o"
    if resume:
        _fit(out, 2, checkpoint_every=2)
        (out / "metrics.jsonl").unlink()
    else:
        out.mkdir()
    (out / "metrics.jsonl").symlink_to(victim)
    with pytest.raises(OSError, match="metrics.jsonl: it is a symbolic link"):
        _fit(out, 4, resume=resume, checkpoint_every=2)
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("link", ["checkpoints", "checkpoints/.tmp_step_0000002", "checkpoints/step_0000002"])
def test_a_linked_checkpoint_directory_is_refused_and_nothing_lands_where_it_points(tmp_path, link):
    out, elsewhere = tmp_path / "o", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / link).parent.mkdir(parents=True)
    (out / link).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OSError, match="symbolic link"):
        _fit(out, 2, checkpoint_every=2)
    assert list(elsewhere.iterdir()) == []


def test_atomic_write_replaces_a_file_refuses_a_link_and_leaves_no_temporary(tmp_path, victim):
    from divmin.engine import _safe_io

    target = tmp_path / "results.json"
    target.write_text("old")
    _safe_io.atomic_write(target, "new")
    assert target.read_text() == "new"
    link = tmp_path / "link.json"
    link.symlink_to(victim)
    with pytest.raises(_safe_io.UnsafePathError, match="link.json: it is a symbolic link"):
        _safe_io.atomic_write(link, "overwritten")
    with pytest.raises(_safe_io.UnsafePathError):
        _safe_io.open_nofollow(link, "a")
    with pytest.raises(RuntimeError, match="writer failed"):
        with _safe_io.atomic_path(tmp_path / "half.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "results.json", "victim"]


def test_safe_dir_refuses_a_link_between_the_root_and_the_directory(tmp_path):
    from divmin.engine import _safe_io

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "run" / "a").mkdir(parents=True)
    (tmp_path / "run" / "a" / "b").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(_safe_io.UnsafePathError, match=r"run/a/b: it is a symbolic link"):
        _safe_io.safe_dir(tmp_path / "run" / "a" / "b" / "c", under=tmp_path / "run")
    assert list((tmp_path / "elsewhere").iterdir()) == []


# ------------------------------------------------------------------ engine.json checks itself
def _edit_engine_json(path, edit):
    state = json.loads((path / "engine.json").read_text())
    edit(state)
    (path / "engine.json").write_text(json.dumps(state, indent=1))


def test_an_altered_step_in_engine_json_falls_back_and_the_resumed_run_ends_as_the_uninterrupted_one(tmp_path):
    reference, _ = _fit(tmp_path / "ref", 6, checkpoint_every=2, keep_checkpoints=None)
    _fit(tmp_path / "run", 4, checkpoint_every=2, keep_checkpoints=None)
    newest = tmp_path / "run" / "checkpoints" / "step_0000004"
    text = (newest / "engine.json").read_text()
    assert '"step": 4,' in text
    (newest / "engine.json").write_text(text.replace('"step": 4,', '"step": 5,'))  # one flipped bit: 4 -> 5
    assert "engine.json does not match its own SHA-256" in verify_checkpoint(newest)
    with pytest.warns(RuntimeWarning, match="step_0000004.*engine.json"):
        assert latest_checkpoint(tmp_path / "run").name == "step_0000002"
    with pytest.warns(RuntimeWarning, match="damaged checkpoint"):
        resumed, result = _fit(tmp_path / "run", 6, resume=True, checkpoint_every=2, keep_checkpoints=None)
    assert [r["step"] for r in result.history] == [3, 4, 5, 6]  # from step 2, not from a step-5 that never was
    for key, value in _weights(reference).items():
        assert torch.equal(_weights(resumed)[key], value), key


def test_an_altered_file_list_or_a_removed_checksum_is_damage_but_an_older_format_still_reads(tmp_path):
    _fit(tmp_path, 2, checkpoint_every=2)
    path = tmp_path / "checkpoints" / "step_0000002"
    assert verify_checkpoint(path) is None
    original = (path / "engine.json").read_text()

    def drop_a_file(state):
        state["files"].pop("rng/rank_0.json")

    _edit_engine_json(path, drop_a_file)
    assert "own SHA-256" in verify_checkpoint(path)
    (path / "engine.json").write_text(original)
    _edit_engine_json(path, lambda s: s.pop("sha256"))
    assert "no checksum of its own" in verify_checkpoint(path)
    (path / "engine.json").write_text(original)
    _edit_engine_json(path, lambda s: (s.pop("sha256"), s.update(format_version=2)))  # written by divmin before
    assert verify_checkpoint(path) is None
