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
    assert len(test) == round(0.2 * 1797)
    assert len(train_y) == len(train) and len(test_y) == len(test)
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


def test_split_indices_partition_and_reproduce():
    from pygen.data import split_indices

    train, test = split_indices(50, "train", seed=3), split_indices(50, "test", seed=3)
    assert sorted(train.tolist() + test.tolist()) == list(range(50)) and len(test) == 10
    assert torch.equal(train, split_indices(50, "train", seed=3))
    assert torch.equal(split_indices(4, "all"), torch.arange(4))


def test_split_keeps_an_example_on_each_side(tmp_path):
    import numpy as np

    from pygen.data import load_dataset, split_indices

    for n in (2, 3, 4):
        train, test = split_indices(n, "train"), split_indices(n, "test")
        assert len(train) >= 1 and len(test) >= 1
        assert sorted(train.tolist() + test.tolist()) == list(range(n))
    for n in (0, 1):
        with pytest.raises(ValueError, match=f"at least 2 examples .*got {n}"):
            split_indices(n, "train")
    assert split_indices(1, "all").tolist() == [0]
    np.save(tmp_path / "one.npy", np.zeros((1, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"one\.npy: a train/test split needs at least 2"):
        load_dataset(str(tmp_path / "one.npy"), "train")
    assert len(load_dataset(str(tmp_path / "one.npy"), "all").images) == 1


def test_array_files(tmp_path):
    import numpy as np

    from pygen.data import load_array, load_dataset

    images = np.random.default_rng(0).integers(0, 256, (10, 6, 5), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    data = load_array(tmp_path / "x.npy")
    assert data.images.shape == (10, 1, 6, 5) and data.labels is None and data.n_levels == 256
    assert torch.equal(data.images[:, 0], torch.as_tensor(images.astype(np.int64)))
    rgb = np.random.default_rng(1).integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", images=rgb, labels=np.arange(10))
    data = load_array(tmp_path / "rgb.npz")
    assert data.images.shape == (10, 3, 4, 4) and data.labels.tolist() == list(range(10))
    assert len(load_dataset(str(tmp_path / "rgb.npz"), "test").images) == 2
    np.save(tmp_path / "float.npy", images.astype(np.float32))
    with pytest.raises(TypeError, match="integer pixel levels"):
        load_array(tmp_path / "float.npy")
    np.save(tmp_path / "big.npy", images.astype(np.int32) + 300)
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        load_array(tmp_path / "big.npy")
    np.savez(tmp_path / "nokey.npz", other=images)
    with pytest.raises(ValueError, match="'images'"):
        load_array(tmp_path / "nokey.npz")
    with pytest.raises(FileNotFoundError, match=r"missing\.npy"):
        load_array(tmp_path / "missing.npy")
    # Class labels are integers; floats of integer values are read as such, others refused.
    np.savez(tmp_path / "flabels.npz", images=rgb, labels=np.arange(10.0))
    assert load_array(tmp_path / "flabels.npz").labels.tolist() == list(range(10))
    np.savez(tmp_path / "halves.npz", images=rgb, labels=np.arange(10) + 0.5)
    with pytest.raises(TypeError, match="integer class labels"):
        load_array(tmp_path / "halves.npz")
    np.savez(tmp_path / "negative.npz", images=rgb, labels=np.arange(10) - 1)
    with pytest.raises(ValueError, match="class labels must be >= 0"):
        load_array(tmp_path / "negative.npz")


def test_absolute_spec_keeps_names_and_resolves_paths(tmp_path, monkeypatch):
    from pygen.data import absolute_spec

    monkeypatch.chdir(tmp_path)
    assert absolute_spec("digits") == "digits" and absolute_spec("invert") == "invert"
    assert absolute_spec("x.npz") == str(tmp_path / "x.npz")
    assert absolute_spec("mnist:data") == f"mnist:{tmp_path / 'data'}"


def test_image_folders(tmp_path):
    import numpy as np
    from PIL import Image

    from pygen.data import load_dataset, load_image_folder

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "pets" / label).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (5, 7), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pets" / label / f"{i}.png")
    data = load_image_folder(tmp_path / "pets")
    assert data.images.shape == (6, 1, 5, 7) and data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert load_dataset(str(tmp_path / "pets"), "all").images.shape == (6, 1, 5, 7)
    Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(
        tmp_path / "pets" / "cat" / "x.png"
    )
    with pytest.raises(ValueError, match="differs"):
        load_image_folder(tmp_path / "pets")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"broken\.png"):
        load_image_folder(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_image_folder(tmp_path / "nowhere")
    # Hidden names (a notebook's checkpoints, macOS's ._ files) are no images and no classes.
    (tmp_path / "pets" / ".ipynb_checkpoints").mkdir()
    Image.fromarray(rng.integers(0, 256, (9, 9), dtype=np.uint8)).save(
        tmp_path / "pets" / ".ipynb_checkpoints" / "x.png"
    )
    (tmp_path / "pets" / "dog" / "._0.png").write_bytes(b"resource fork")
    (tmp_path / "pets" / "cat" / "x.png").unlink()
    assert load_image_folder(tmp_path / "pets").labels.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="one image; a dataset is"):
        load_dataset(str(tmp_path / "pets" / "cat" / "0.png"))


def test_image_folder_modes(tmp_path):
    import numpy as np
    from PIL import Image

    from pygen.data import load_image_folder

    grey = tmp_path / "grey"
    grey.mkdir()
    pixels = np.array([[0, 128], [200, 255]], dtype=np.uint8)
    Image.fromarray(pixels).convert("P").save(grey / "a_palette.png")  # grey colours only
    Image.fromarray(pixels.astype(np.uint16) * 257).save(grey / "b_16bit.png")
    Image.fromarray(pixels).convert("LA").save(grey / "c_alpha.png")
    data = load_image_folder(grey)
    assert data.images.shape == (3, 1, 2, 2)
    for image in data.images:
        assert image[0].tolist() == pixels.tolist()
    colour = np.zeros((2, 2, 3), dtype=np.uint8)
    colour[0, 0] = (255, 255, 0)
    Image.fromarray(colour).convert("P").save(grey / "d_colour_palette.png")
    data = load_image_folder(grey)  # one colour image: every image as RGB
    assert data.images.shape == (4, 3, 2, 2)
    assert data.images[0].tolist() == [pixels.tolist()] * 3
    assert data.images[3, :, 0, 0].tolist() == [255, 255, 0]


def test_torchvision_datasets_say_how_to_install_torchvision(tmp_path, monkeypatch):
    import sys

    from pygen.data import load_dataset

    monkeypatch.setitem(sys.modules, "torchvision", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'pygen\[vision\]'"):
        load_dataset(f"mnist:{tmp_path}")


def test_torchvision_splits(tmp_path, monkeypatch):
    """train, test, and all = both (not the training set alone); other names are an error.
    torchvision's dataset classes stand in as the attributes pygen reads."""
    import sys
    import types

    import numpy as np

    from pygen.data import load_dataset

    class FakeMNIST:
        def __init__(self, root, train, download):
            assert not download
            if not (tmp_path / "MNIST").exists():
                raise RuntimeError("Dataset not found.")
            n = 5 if train else 3
            self.data = np.full((n, 28, 28), 1 if train else 2, dtype=np.uint8)
            self.targets = list(range(n))

    datasets = types.SimpleNamespace(MNIST=FakeMNIST, CIFAR10=FakeMNIST)
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(datasets=datasets))
    with pytest.raises(FileNotFoundError, match="MNIST/raw/"):
        load_dataset(f"mnist:{tmp_path}")
    (tmp_path / "MNIST").mkdir()
    assert load_dataset(f"mnist:{tmp_path}", "train").images.shape == (5, 1, 28, 28)
    test = load_dataset(f"mnist:{tmp_path}", "test")
    assert test.images.shape == (3, 1, 28, 28) and (test.images == 2).all()
    both = load_dataset(f"mnist:{tmp_path}", "all")
    assert both.images.shape == (8, 1, 28, 28) and both.labels.tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_dataset(f"mnist:{tmp_path}", "val")
