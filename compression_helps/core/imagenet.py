"""The 1000 ImageNet classes: their number, wnids and index order.

Every label in the project is an ImageNet class index in sorted-wnid
order, the order of Keras' and TFDS' ImageNet classifiers.
"""

from __future__ import annotations

import functools
import importlib.resources

__all__ = ["NUM_CLASSES", "wnid_index", "wnids"]

NUM_CLASSES = 1000


@functools.cache
def wnids() -> tuple[str, ...]:
    """The 1000 ImageNet wnids; position = class index."""
    text = (
        importlib.resources.files("compression_helps")
        .joinpath("data/imagenet_classes.tsv")
        .read_text()
    )
    rows = [line.split("\t") for line in text.splitlines()[1:] if line]
    # The file is in index order; index = position in sorted wnid order.
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    return tuple(r[1] for r in rows)


@functools.cache
def wnid_index() -> dict[str, int]:
    """Wnid -> class index."""
    return {wnid: i for i, wnid in enumerate(wnids())}
