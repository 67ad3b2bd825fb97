"""Datasets a user points at: an .npy/.npz array, a folder of images, or torchvision's MNIST /
CIFAR-10 already on disk (never downloaded). Every loader returns integer pixel levels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import Tensor

from pygen.data.digits import DIGIT_LEVELS, load_digits
from pygen.data.split import split_indices

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class ImageData:
    """Images as int64 levels ``(N, C, H, W)`` in ``[0, n_levels)``, optional labels ``(N,)``."""

    images: Tensor
    labels: Tensor | None
    n_levels: int
    name: str


def _levels(array: np.ndarray, source: str) -> tuple[Tensor, int]:
    """Integer arrays are pixel levels in [0, 255] (256 levels); anything else is an error."""
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{source}: expected integer pixel levels, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(
            f"{source}: pixel levels must lie in [0, 255], got [{array.min()}, {array.max()}]"
        )
    return torch.as_tensor(array.astype(np.int64)), 256


def _class_labels(array: np.ndarray, source: str) -> Tensor:
    """Class labels: integers, or floats with integer values (a float label is an error, not
    truncated)."""
    if np.issubdtype(array.dtype, np.floating) and np.array_equal(array, np.round(array)):
        array = array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{source}: expected integer class labels, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise ValueError(f"{source}: class labels must be >= 0, got {array.min()}")
    return torch.as_tensor(array.astype(np.int64))


def _as_nchw(images: Tensor, source: str) -> Tensor:
    if images.dim() == 3:  # (N, H, W) grey
        images = images.unsqueeze(1)
    elif images.dim() == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2)  # NHWC -> NCHW
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"{source}: expected images (N, H, W), (N, C, H, W) or (N, H, W, C) with "
            f"1 or 3 channels, got shape {tuple(images.shape)}"
        )
    return images.contiguous()


def load_array(path: str | Path) -> ImageData:
    """An .npy array of images, or an .npz with ``images`` (or ``x``) and optional ``labels``
    (or ``y``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: one image; a dataset is an .npy/.npz file or a folder of images")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: not a readable .npy/.npz file ({err})") from err
    labels = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        keys = set(loaded.files)
        key = "images" if "images" in keys else "x" if "x" in keys else None
        if key is None:
            raise ValueError(f"{path}: an .npz needs an 'images' or 'x' array, has {sorted(keys)}")
        array = loaded[key]
        label_key = "labels" if "labels" in keys else "y" if "y" in keys else None
        if label_key is not None:
            labels = _class_labels(loaded[label_key], f"{path}: {label_key}")
    else:
        array = loaded
    images, n_levels = _levels(array, str(path))
    images = _as_nchw(images, str(path))
    if labels is not None and labels.shape != (len(images),):
        raise ValueError(f"{path}: {len(images)} images but labels of shape {tuple(labels.shape)}")
    return ImageData(images, labels, n_levels, path.name)


def _image_levels(img, file: Path) -> np.ndarray:
    """A PIL image's 8-bit levels: ``(H, W)`` if it is grey, else ``(H, W, 3)``; alpha dropped,
    16-bit grey scaled to 8 bits, a palette image grey when all its colours are."""
    if img.mode.startswith("I"):  # 16-bit (or 32-bit integer) grey: 0..65535 to 0..255
        return np.rint(np.asarray(img, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
    if img.mode == "F":
        raise ValueError(f"{file}: floating-point images are not supported")
    if img.mode in ("1", "L", "LA"):
        return np.asarray(img.convert("L"))
    rgb = np.asarray(img.convert("RGB"))
    if img.mode == "P" and (rgb == rgb[..., :1]).all():
        return rgb[..., 0]
    return rgb


def load_image_folder(path: str | Path) -> ImageData:
    """Every image file below ``path`` (hidden names skipped); sub-folders name classes (labels in
    sorted order). The images are grey unless one of them has colour (then grey ones are repeated
    over RGB)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder")
    files = sorted(
        p
        for p in path.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        # Hidden files and folders (.ipynb_checkpoints, macOS's ._ files) hold no data.
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise ValueError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    classes = sorted({p.parent.relative_to(path).parts[0] for p in files if p.parent != path})
    arrays, size = [], None
    for file in files:
        try:
            with Image.open(file) as img:
                img.load()
                arr = _image_levels(img, file)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{file}: unreadable image ({err})") from err
        if size is None:
            size = arr.shape[:2]
        elif arr.shape[:2] != size:
            raise ValueError(f"{file}: size {arr.shape[:2]} differs from the others' {size}")
        arrays.append(arr)
    if any(arr.ndim == 3 for arr in arrays):  # one colour image makes the folder RGB
        arrays = [arr if arr.ndim == 3 else np.repeat(arr[..., None], 3, axis=-1) for arr in arrays]
    images = _as_nchw(torch.as_tensor(np.stack(arrays).astype(np.int64)), str(path))
    labels = None
    if classes:
        index = {c: i for i, c in enumerate(classes)}
        if any(p.parent == path for p in files):
            raise ValueError(f"{path}: mixes images at the top with class sub-folders")
        labels = torch.tensor([index[p.relative_to(path).parts[0]] for p in files])
    return ImageData(images, labels, 256, path.name)


def load_torchvision(name: str, root: str | Path, split: str = "train") -> ImageData:
    """MNIST or CIFAR-10 from torchvision's files already under ``root`` (never downloaded)."""
    try:
        import torchvision
    except ImportError as err:
        raise ImportError(
            f"loading {name} needs torchvision: pip install 'pygen[vision]' (or torchvision)"
        ) from err
    classes = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}
    if name not in classes:
        raise ValueError(f"unknown torchvision dataset {name!r}; known: {sorted(classes)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not str(root):
        raise ValueError(f"{name}: needs the folder of its files, {name}:ROOT")
    expected = {"mnist": "MNIST/raw/ (the four idx files)", "cifar10": "cifar-10-batches-py/"}
    try:
        ds = classes[name](str(root), train=split == "train", download=False)
    except (RuntimeError, AssertionError) as err:  # torchvision: not found, or a corrupt file
        raise FileNotFoundError(
            f"{root}: no readable {name} files (torchvision's {expected[name]} under it): {err}"
        ) from err
    images = _as_nchw(torch.as_tensor(np.asarray(ds.data).astype(np.int64)), name)
    labels = torch.as_tensor(np.asarray(ds.targets).astype(np.int64))
    return ImageData(images, labels, 256, name)


def load_dataset(spec: str, split: str = "train", *, seed: int = 0) -> ImageData:
    """``digits`` (bundled), ``mnist:ROOT``, ``cifar10:ROOT``, an .npy/.npz file or an image folder.

    User data (files and folders) is split like the digits (``split_indices``: a seeded 80/20
    permutation); ``split="all"`` keeps everything.
    """
    if spec == "digits":
        images, labels = load_digits(split, seed=seed)
        return ImageData(images, labels, DIGIT_LEVELS, "digits")
    name, sep, root = spec.partition(":")
    if sep and name in ("mnist", "cifar10"):
        if split == "all":  # the dataset's own train and test sets together
            train, test = (load_torchvision(name, root, part) for part in ("train", "test"))
            images, labels = (
                torch.cat([train.images, test.images]),
                # load_torchvision's data is labelled
                torch.cat([cast(Tensor, train.labels), cast(Tensor, test.labels)]),
            )
            return ImageData(images, labels, 256, name)
        return load_torchvision(name, root, split)
    path = Path(spec)
    data = load_image_folder(path) if path.is_dir() else load_array(path)
    try:
        chosen = split_indices(len(data.images), split, seed=seed)
    except ValueError as err:  # too few images: name the data
        raise ValueError(f"{spec}: {err}") from err
    kept_labels = data.labels[chosen] if data.labels is not None else None
    return ImageData(data.images[chosen], kept_labels, data.n_levels, data.name)


def absolute_spec(spec: str) -> str:
    """``spec`` (as ``load_dataset`` and ``load_translation_data`` read it) with its path made
    absolute, so that a run records data it can find again from any folder; names (``digits``,
    ``SYNTHETIC_DOMAINS``) stay as they are."""
    if spec == "digits" or spec in SYNTHETIC_DOMAINS:
        return spec
    name, sep, root = spec.partition(":")
    if sep and name in ("mnist", "cifar10"):
        return f"{name}:{Path(root).resolve()}"
    return str(Path(spec).resolve())


def to_tanh_range(data: ImageData) -> Tensor:
    """The images of ``data`` as floats in ``[-1, 1]`` (the range of Tanh generators)."""
    return data.images.float() / (data.n_levels - 1) * 2 - 1


SYNTHETIC_DOMAINS: dict[str, Callable[[Tensor], Tensor]] = {
    "invert": torch.neg,  # intensity inverse of images in [-1, 1]
    "mirror": lambda images: images.flip(-1),  # left-right mirror image
}


def load_translation_data(
    spec_a: str | Path,
    spec_b: str | Path,
    paired: bool = False,
    *,
    split: str = "all",
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Two image domains for translation (CycleGAN, pix2pix), each from what ``load_dataset``
    reads (an image folder, an .npy/.npz file, ``digits``) with its ``split`` and ``seed``, as
    floats in ``[-1, 1]``.

    Unpaired (CycleGAN): any two sets of images of one size. ``paired`` (pix2pix): image ``i``
    of A translates to image ``i`` of B (folders pair by sorted file name), so the counts and
    sizes must match (equal counts split alike). ``spec_b`` may also name a transform of A in
    ``SYNTHETIC_DOMAINS`` (``invert``, ``mirror``): a paired task with a known answer."""
    a = load_dataset(str(spec_a), split, seed=seed)
    if str(spec_b) in SYNTHETIC_DOMAINS:
        return to_tanh_range(a), SYNTHETIC_DOMAINS[str(spec_b)](to_tanh_range(a))
    b = load_dataset(str(spec_b), split, seed=seed)
    if a.images.shape[2:] != b.images.shape[2:]:
        raise ValueError(
            f"domains differ in image size: {tuple(a.images.shape[2:])} vs "
            f"{tuple(b.images.shape[2:])}"
        )
    if paired and len(a.images) != len(b.images):
        raise ValueError(
            f"paired domains need as many images each, got {len(a.images)} and {len(b.images)}"
        )
    return to_tanh_range(a), to_tanh_range(b)
