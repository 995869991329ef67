"""Issue 26 section 4, eval: GCI measures and clustering metrics refuse what they cannot score."""

import math

import numpy as np
import pytest

from divmin.eval import ari, clustering_accuracy, gci_metrics, nmi


def test_gci_metrics_refuses_2d_instants():
    # was read as one flattened sequence: 4 "cycles" out of a 2 x 2 table
    with pytest.raises(ValueError, match="`reference_instants`"):
        gci_metrics(np.array([[0.01, 0.02], [0.03, 0.04]]), [0.01])
    with pytest.raises(ValueError, match="`estimated_instants`"):
        gci_metrics([0.01, 0.02, 0.03], np.array([[0.01], [0.02]]))


def test_gci_metrics_refuses_complex_and_text_instants():
    with pytest.raises(TypeError, match="`reference_instants`"):
        gci_metrics(np.array([0.01, 0.02]) * 1j, [0.01])
    with pytest.raises(TypeError, match="`estimated_instants`"):
        gci_metrics([0.01, 0.02], ["a"])
    with pytest.raises(ValueError, match="`sample_rate`"):
        gci_metrics([0.01, 0.02], [0.01], sample_rate=math.inf)


@pytest.mark.parametrize("fn", [clustering_accuracy, nmi, ari])
@pytest.mark.parametrize("bad", [[0.0, 1.0, math.inf], [0.0, 1.0, 1e30], np.array([0, 1, 1]) * (1 + 1j)])
def test_clustering_metrics_refuse_labels_that_are_not_integers(fn, bad):
    # inf and 1e30 were cast to int64 garbage (both to the same id); complex labels lost their imaginary part
    with pytest.raises(ValueError, match="`labels_true`"):
        fn(bad, [0, 1, 1])


def test_clustering_accuracy_with_whole_float_labels_is_the_integer_answer():
    assert clustering_accuracy([0.0, 0.0, 1.0, 1.0, 2.0], [1, 1, 0, 0, 0]) == 0.8
