"""A reader of PyTorch state-dict checkpoints that needs no PyTorch.

`torch.save` writes a state dict in one of two formats: the legacy one
(before torch 1.6, `_use_new_zipfile_serialization=False`: a stream of
pickles followed by the raw bytes of every storage) and the zip archive of
torch >= 1.6 (`<root>/data.pkl` plus one file per storage). Both pickle the
tensors as calls of `torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)` with storages as persistent ids. `read_torch_checkpoint`
unpickles every record through a restricted unpickler (the legacy header
records may hold only numbers, strings, lists and dicts; the state dict only
those and a few tensor classes), so a checkpoint cannot run code, and cuts
each tensor out of its storage bytes with numpy after checking that it lies
inside them.

Used for the EfficientNet-Lite0 ImageNet checkpoint (`efficientnet_lite`),
which is in the legacy format; installing PyTorch for one file read would
add about 750 MB to every install (BUILD.md).

Not supported: big-endian files, GPU-only storage types, quantized or sparse
tensors, tensors with negative strides or with more elements than their
storage (expanded views), and pickled objects other than a flat state dict
of tensors.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from compression_helps.core import files

__all__ = ["read_torch_checkpoint"]

# Legacy `torch.save` (before 1.6, `_use_new_zipfile_serialization=False`)
# starts with this pickled magic number.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands for `torch.FloatStorage` etc. in the pickle."""

    def __init__(self, name: str):
        self.dtype = np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<")


_Storage = collections.namedtuple("_Storage", ["key", "dtype", "offset"])
_Tensor = collections.namedtuple(
    "_Tensor", ["storage", "offset", "shape", "strides"]
)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused_args):
    """Stands for `torch._utils._rebuild_tensor(_v2)`: bytes come later."""
    del unused_args  # requires_grad, backward hooks, metadata.
    return _Tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused_args):
    """Stands for `torch._utils._rebuild_parameter`."""
    del unused_args
    return data


class _HeaderUnpickler(pickle.Unpickler):
    """Unpickles plain data only: any class or function is refused.

    The legacy format's records besides the state dict (magic number,
    protocol version, `sys_info`, storage keys) are ints, strings, bools and
    lists or dicts of them; plain `pickle.load` would run whatever callable a
    crafted file names before the reader could refuse it.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Refuses every global: plain data needs none."""
        raise pickle.UnpicklingError(f"the pickle calls {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        """Refuses persistent ids: only the state dict has storages."""
        raise pickle.UnpicklingError("unexpected persistent id")


class _CheckpointUnpickler(_HeaderUnpickler):
    """Unpickles a state dict, allowing only the classes it needs.

    Storages are pickled as persistent ids; tensors as calls of
    `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.
    """

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def find_class(self, module: str, name: str) -> Any:
        """Resolves only state-dict classes; anything else is refused."""
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        """Storage references: `('storage', type, key, location, ...)`."""
        if not isinstance(pid, tuple) or len(pid) < 3 or pid[0] != "storage":
            raise pickle.UnpicklingError("unsupported persistent id")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("unsupported storage type")
        offset = 0
        # Legacy format: (..., location, numel, view_metadata); a view shares
        # the bytes of its root storage, from an element offset on.
        if len(pid) > 5 and pid[5] is not None:
            _, offset, _ = pid[5]
        return _Storage(key, storage_type.dtype, _count(offset, "offset"))


def _count(value: Any, what: str) -> int:
    """A non-negative int from the file, or ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"bad {what} {value!r}")
    return value


def _plain(value: Any) -> Any:
    """`value` if it is plain header data (ints, strings, lists, dicts)."""
    if isinstance(value, (list, tuple)):
        for item in value:
            _plain(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _plain(key)
            _plain(item)
    elif value is not None and not isinstance(value, (int, float, str, bytes)):
        raise ValueError(f"unexpected {type(value).__name__} in the header")
    return value


def _load_header(f: BinaryIO) -> Any:
    return _plain(_HeaderUnpickler(f).load())


def _state_dict(f: BinaryIO) -> dict[str, _Tensor]:
    tensors = _CheckpointUnpickler(f).load()
    if not isinstance(tensors, dict):
        raise ValueError(f"not a state dict ({type(tensors).__name__})")
    return tensors


def _materialize(
    tensors: Mapping[str, Any], buffers: Mapping[str, bytes]
) -> dict[str, np.ndarray]:
    """Cuts each tensor out of its storage bytes, within its bounds."""
    arrays = {}
    for name, tensor in tensors.items():
        if not isinstance(tensor, _Tensor):
            raise ValueError(f"{name}: not a tensor ({type(tensor).__name__})")
        storage = tensor.storage
        if not isinstance(storage, _Storage) or storage.key not in buffers:
            raise ValueError(f"{name}: no storage")
        flat = np.frombuffer(buffers[storage.key], dtype=storage.dtype)
        start = storage.offset + _count(tensor.offset, "offset")
        shape = tuple(_count(n, "size") for n in tensor.shape)
        strides = tuple(_count(s, "stride") for s in tensor.strides)
        if len(shape) != len(strides):
            raise ValueError(
                f"{name}: {len(shape)} sizes, {len(strides)} strides"
            )
        numel = math.prod(shape)  # Python ints: no overflow.
        # Non-negative offsets and strides: `last` bounds every element read,
        # so the view below never leaves the buffer.
        last = start + sum(
            (n - 1) * s for n, s in zip(shape, strides, strict=True)
        )
        if numel and last >= flat.size:
            raise ValueError(f"{name}: tensor runs past its storage")
        if numel > flat.size:  # Stride 0: a few bytes could ask for terabytes.
            raise ValueError(f"{name}: more elements than its storage")
        view = np.lib.stride_tricks.as_strided(
            flat[start:] if numel else flat[:0],
            shape=shape,
            strides=[s * flat.itemsize for s in strides],
            writeable=False,
        )
        arrays[name] = np.array(view, dtype=storage.dtype.newbyteorder("="))
    return arrays


def _read_legacy(f: BinaryIO, file_size: int) -> dict[str, np.ndarray]:
    """Legacy format: 3 header pickles, the state dict, keys, raw storages."""
    if _load_header(f) != _LEGACY_MAGIC:
        raise ValueError("not a PyTorch checkpoint (bad magic number)")
    if _load_header(f) != _LEGACY_PROTOCOL:
        raise ValueError("unsupported legacy PyTorch protocol version")
    sys_info = _load_header(f)
    if not isinstance(sys_info, dict):
        raise ValueError("bad sys_info record")
    if not sys_info.get("little_endian", True):
        raise ValueError("big-endian PyTorch checkpoints are not supported")
    tensors = _state_dict(f)
    keys = _load_header(f)  # Storage keys, in the order their bytes follow.
    if not isinstance(keys, list):
        raise ValueError("bad storage key record")
    dtypes = {}
    for tensor in tensors.values():
        if isinstance(tensor, _Tensor) and isinstance(tensor.storage, _Storage):
            dtypes[tensor.storage.key] = tensor.storage.dtype
    buffers = {}
    for key in map(str, keys):
        if key not in dtypes:
            raise ValueError(f"storage {key!r} of no tensor")
        # Each storage: int64 element count, then the raw elements.
        header = f.read(8)
        if len(header) != 8:
            raise ValueError("truncated PyTorch checkpoint")
        numel = int(np.frombuffer(header, "<i8")[0])
        nbytes = numel * dtypes[key].itemsize
        # Checked against the file first: `read(n)` allocates n bytes.
        if numel < 0 or nbytes > file_size - f.tell():
            raise ValueError("truncated PyTorch checkpoint")
        buffers[key] = f.read(nbytes)
    return _materialize(tensors, buffers)


def _read_zip(path: str) -> dict[str, np.ndarray]:
    """Zip format (torch >= 1.6): `<root>/data.pkl` + `<root>/data/<key>`."""
    archive_size = os.path.getsize(path)

    def read(name: str) -> bytes:
        # torch stores entries uncompressed; a compressed entry could claim
        # any size (a zip bomb), so none may exceed the archive itself.
        if archive.getinfo(name).file_size > archive_size:
            raise ValueError(f"{name}: larger than the archive")
        return archive.read(name)

    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError("no single data.pkl in the archive")
        root = pickles[0][: -len("data.pkl")]
        byteorder = f"{root}byteorder"
        if byteorder in names and read(byteorder) != b"little":
            raise ValueError("big-endian PyTorch checkpoints are not supported")
        tensors = _state_dict(io.BytesIO(read(pickles[0])))
        keys = {
            t.storage.key
            for t in tensors.values()
            if isinstance(t, _Tensor) and isinstance(t.storage, _Storage)
        }
        buffers = {k: read(f"{root}data/{k}") for k in keys}
    return _materialize(tensors, buffers)


def read_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict of tensors without importing PyTorch.

    Supports both `torch.save` formats: the legacy one (a stream of pickles
    followed by the raw storage bytes, used by the EfficientNet-Lite0
    checkpoint) and the zip archive of torch >= 1.6. No plain `pickle.load`:
    the legacy header records may hold only plain data, the state dict only
    `collections.OrderedDict`, tensor rebuilds and storage types; a file that
    pickles anything else (`os.system`, ...) is refused before it is called.

    Args:
      path: the `.pth` file.

    Returns:
      Parameter name -> array (PyTorch layout, native byte order), in the
      file's order.

    Raises:
      ValueError: one line naming `path`: not a PyTorch state dict of CPU
        tensors of a numpy dtype, truncated, or a pickle of other objects.
      OSError: the file cannot be read.
    """
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        with open(path, "rb") as f:
            return _read_legacy(f, os.fstat(f.fileno()).st_size)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path}: refused, not a plain PyTorch state dict of tensors "
            f"({e}); a checkpoint is never allowed to run code"
        ) from None
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        EOFError,
        OverflowError,
        RecursionError,
        MemoryError,
        zipfile.BadZipFile,
    ) as e:
        # Crafted or damaged files fail in many ways (a pickle may claim a
        # string of 2**60 bytes, nest lists 10**6 deep): each is one line.
        raise ValueError(
            f"{path}: not a readable PyTorch state dict ({files.first_line(e)})"
        ) from None
