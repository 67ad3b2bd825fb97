"""The bundled digits dataset."""

import pytest
import torch

from pygen.data import DIGIT_LEVELS, load_digits


def test_digits_splits_are_disjoint_and_cover_the_data():
    train, train_y = load_digits("train")
    test, test_y = load_digits("test")
    everything, _ = load_digits("all")
    assert train.shape[1:] == (1, 8, 8) and train.dtype == torch.int64
    assert len(train) + len(test) == len(everything) == 1797
    assert (
        len(test) == round(0.2 * 1797) and len(train_y) == len(train) and len(test_y) == len(test)
    )
    assert train.min() >= 0 and train.max() == DIGIT_LEVELS - 1
    assert set(test_y.tolist()) == set(range(10))
    rows = {tuple(x.flatten().tolist()) for x in train}
    assert sum(tuple(x.flatten().tolist()) in rows for x in test) < 20  # a few true duplicates
    again, _ = load_digits("train")
    assert torch.equal(again, train)


def test_digits_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        load_digits("validation")
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits("train", test_fraction=1.5)
