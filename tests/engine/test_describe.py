"""field_docs / describe_config read each config field's comment from the source."""

from __future__ import annotations

import dataclasses

import pytest

from divmin.engine import EngineConfig, describe_config, field_docs


@dataclasses.dataclass
class _Inner:
    # the comment above a field,
    # over two lines
    depth: int = 2
    width: int = 8  # a trailing comment
    bare: int = 0


@dataclasses.dataclass
class _Outer:
    lr: float = 0.1  # learning rate
    inner: _Inner = dataclasses.field(default_factory=_Inner)  # nested settings


@dataclasses.dataclass
class _Child(_Outer):
    lr: float = 0.5  # the child's own words win
    extra: str = "x"  # a field of the subclass


def test_comments_above_and_after_a_field_are_read():
    assert field_docs(_Inner) == {"depth": "the comment above a field, over two lines", "width": "a trailing comment"}


def test_subclass_fields_and_overrides():
    docs = field_docs(_Child)
    assert docs["lr"] == "the child's own words win"
    assert docs["inner"] == "nested settings" and docs["extra"] == "a field of the subclass"


def test_describe_config_walks_nested_configs_with_dotted_keys():
    rows = describe_config(_Outer(lr=0.3))
    assert rows == [("lr", 0.3, "learning rate"), ("inner.depth", 2, "the comment above a field, over two lines"),
                    ("inner.width", 8, "a trailing comment"), ("inner.bare", 0, "")]


def test_every_engine_field_has_a_comment():
    docs = field_docs(EngineConfig)
    assert set(docs) == {f.name for f in dataclasses.fields(EngineConfig)}


@pytest.mark.parametrize("bad", [1, "x", _Outer])
def test_describe_config_needs_an_instance(bad):
    with pytest.raises(TypeError, match="`config` must be a dataclass instance"):
        describe_config(bad)


def test_field_docs_needs_a_dataclass_type():
    with pytest.raises(TypeError, match="`cls` must be a dataclass type"):
        field_docs(_Outer())
