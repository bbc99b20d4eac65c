"""genfast.images: value ranges for numpy and torch alike, grids, labelled and enlarged grids."""

import numpy as np
import pytest
import torch

from genfast import images


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_value_ranges_round_trip(kind):
    unit = np.linspace(0, 1, 11, dtype=np.float32)
    x = torch.from_numpy(unit) if kind == "torch" else unit
    tanh = images.from_unit(x, "tanh")
    assert float(tanh.min()) == -1.0 and float(tanh.max()) == 1.0
    np.testing.assert_allclose(np.asarray(images.to_unit(tanh, "tanh")), unit, atol=1e-7)
    assert images.from_unit(x, "unit") is x
    np.testing.assert_array_equal(np.asarray(images.to_unit(x * 3 - 1, "unit")), np.clip(unit * 3 - 1, 0, 1))
    with pytest.raises(ValueError, match="value_range"):
        images.to_unit(x, "sigmoid")


def test_labelled_grid_is_enlarged_and_labels_every_row():
    batch = np.random.default_rng(0).random((12, 1, 28, 28), dtype=np.float32)
    plain = images.grid(batch, columns=4)
    assert plain.shape == (3 * 30 + 2, 4 * 30 + 2)
    enlarged = np.asarray(images.labelled_grid(batch, columns=4, scale=3))
    np.testing.assert_array_equal(enlarged, plain.repeat(3, axis=0).repeat(3, axis=1))
    labelled = np.asarray(images.labelled_grid(batch, columns=4, row_labels=("first", "rest"), scale=3))
    margin = labelled.shape[1] - enlarged.shape[1]
    assert labelled.shape[0] == enlarged.shape[0] and margin > 20
    np.testing.assert_array_equal(labelled[:, margin:], enlarged)
    for row in range(3):  # ink in the label column at the height of every row, none between rows
        top = 3 * (2 + row * 30)
        assert (labelled[top:top + 84, :margin] < 128).any()
    assert (labelled[:6, :margin] == 255).all()
