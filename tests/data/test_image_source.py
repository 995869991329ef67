"""ImageSource / IMAGE_SETS: the image fields shared by `divmin train depict` and `divmin train weat`."""

import dataclasses

import pytest
import torch

from divmin.data import IMAGE_SETS, ImageSource, load_digits_images


def test_the_first_max_samples_digits_with_their_labels():
    x_all, y_all = load_digits_images()
    x, y = ImageSource(max_samples=7).images()
    assert torch.equal(x, x_all[:7]) and torch.equal(y, y_all[:7])
    x, y = ImageSource().images()  # null: every image
    assert x.shape == (1797, 1, 8, 8) and torch.equal(y, y_all)


def test_each_set_states_its_shape_classes_and_flat_width():
    assert sorted(IMAGE_SETS.names()) == ["digits", "fashion-mnist"]
    digits = ImageSource().image_set()
    assert digits is IMAGE_SETS.get("digits")
    assert (digits.shape, digits.classes, digits.features) == ((1, 8, 8), 10, 64)
    fashion = ImageSource(data="fashion-mnist").image_set()
    assert (fashion.shape, fashion.classes, fashion.features) == ((1, 28, 28), 10, 784)


@pytest.mark.parametrize("changes, message", [
    (dict(data="mnist"), "`data` must be one of 'digits', 'fashion-mnist'"),
    (dict(max_samples=1), "`max_samples`"),
])
def test_bad_fields_are_refused_by_name(changes, message):
    with pytest.raises(ValueError, match=message):
        ImageSource(**changes)


def test_a_train_config_inherits_the_fields_and_their_checks():
    from divmin.cluster import DEPICTTrainConfig
    from divmin.robust import WEATTrainConfig

    for cls in (DEPICTTrainConfig, WEATTrainConfig):
        names = [f.name for f in dataclasses.fields(cls)]
        assert names[:2] == ["data", "max_samples"] and issubclass(cls, ImageSource)
        with pytest.raises(ValueError, match="`max_samples`"):
            cls(max_samples=1)
