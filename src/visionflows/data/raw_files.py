"""Packed raw images on disk: ``.npy`` arrays and SIDD-style MATLAB v7.3 (HDF5) ``.MAT`` files.

:func:`read_packed_raw` reads clean packed raw ``[B, 4, H, W]`` (from ``.npy`` ``[4, H, W]`` / ``[B, 4, H, W]``,
or a SIDD ``.MAT`` Bayer image, packed); :func:`write_packed_raw` writes a result in the same format and layout;
:func:`write_raw_mat` writes a Bayer image as a v7.3 ``.MAT`` file that :func:`~visionflows.data.sidd.read_raw_mat`
(and MATLAB, and the official code's h5py reader) reads. Every problem is an :class:`InputError` /
:class:`OutputError` naming the file; writes are atomic.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from visionflows.errors import DataError, InputError, OutputError

__all__ = ["RAW_SUFFIXES", "is_pickle_refusal", "read_packed_raw", "write_packed_raw", "write_raw_mat"]

RAW_SUFFIXES = (".npy", ".mat")


def is_pickle_refusal(err: BaseException) -> bool:
    """Whether ``numpy.load(..., allow_pickle=False)`` raised ``err`` because the file is not numeric array data
    (not in NumPy's format at all, which NumPy then takes for a pickle, or an array of Python objects). The file
    is never loaded with pickling: that would run code from it."""
    text = str(err)
    return isinstance(err, ValueError) and ("pickled" in text or "allow_pickle" in text)


def read_packed_raw(path: str | os.PathLike) -> tuple[torch.Tensor, str, bool]:
    """Clean packed raw ``[B, 4, H, W]`` float32 from ``.npy`` or a SIDD ``.MAT`` file.

    Returns ``(clean, format, had_batch_dim)``; format is ``"npy"`` or ``"mat"``. Values must be finite floats
    (normalised raw, ``(DN - black) / (white - black)``); B, H and W must be at least 1."""
    from visionflows.data.sidd import pack_raw, read_raw_mat

    p = Path(path)
    if p.is_dir():
        raise InputError(f"clean file {p} is a folder, not a file.", "give a packed raw .npy or a SIDD .MAT file.")
    if not p.is_file():
        raise InputError(f"clean file {p} does not exist.", "check the --clean path.")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        if p.stat().st_size == 0:
            raise InputError(f"{p} is empty (0 bytes).", "write the array with numpy.save.")
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            if is_pickle_refusal(err):
                with open(p, "rb") as fh:
                    npy = fh.read(6) == b"\x93NUMPY"
                what = "it holds Python objects" if npy else "it has no NumPy header (e.g. a text file renamed .npy)"
                raise InputError(f"{p} is not a numeric .npy array: {what}.",
                                 "save a float array with numpy.save, e.g. numpy.save(path, "
                                 "array.astype(numpy.float32)).") from None
            raise InputError(f"cannot read {p} as a .npy array ({err}).", "save it with numpy.save.") from err
        fmt = "npy"
    elif suffix == ".mat":
        try:
            arr = pack_raw(read_raw_mat(p))
        except DataError as err:
            raise InputError(str(err.problem), err.fix) from err
        fmt = "mat"
    else:
        raise InputError(f"unsupported clean file type {p.suffix!r} ({p}).",
                         "use a packed raw .npy [4,H,W] / [B,4,H,W] or a SIDD .MAT file.")
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{p} holds {getattr(arr, 'dtype', type(arr).__name__)} values; expected floats in [0, 1].",
                         "normalise raw values: (DN - black) / (white - black).")
    batched = arr.ndim == 4
    if arr.ndim not in (3, 4) or arr.shape[-3] != 4:
        raise InputError(f"{p} has shape {arr.shape}; expected packed raw [4,H,W] or [B,4,H,W].",
                         "pack the Bayer image into 4 channels first (visionflows.data.sidd.pack_raw).")
    if arr.size == 0:
        raise InputError(f"{p} has shape {arr.shape}: no pixels (B, H and W must be at least 1).",
                         "give a non-empty packed raw array.")
    if not np.isfinite(arr).all():
        raise InputError(f"{p} holds NaN/Inf values.", "replace them (e.g. numpy.nan_to_num) before sampling.")
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return (t if batched else t[None]), fmt, batched


def write_raw_mat(path: str | os.PathLike, bayer: np.ndarray) -> None:
    """A MATLAB v7.3 (HDF5) file with one single-precision array ``x`` (as h5py reads SIDD files), atomically."""
    import h5py

    from visionflows.io.atomic import current_umask, output_error

    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is an existing folder.", "give a file name, not a folder.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~current_umask())
        os.close(fd)
    except OSError as err:
        raise output_error(path, err) from err
    try:
        try:
            with h5py.File(tmp, "w", userblock_size=512) as f:
                dset = f.create_dataset("x", data=np.asarray(bayer, dtype=np.float32))
                dset.attrs["MATLAB_class"] = np.bytes_("single")
            header = f"MATLAB 7.3 MAT-file, Platform: visionflows, Created on: {time.ctime()} HDF5 schema 1.00 ."
            block = header.encode("ascii").ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM"
            with open(tmp, "r+b") as fh:
                fh.write(block.ljust(512, b"\x00"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as err:  # h5py reports a full disk as OSError (sometimes without errno)
            if err.errno is None:
                raise OutputError(f"cannot write {path}: {err}.", "free disk space or choose another --out.") from err
            raise output_error(path, err) from err
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_packed_raw(path: str | os.PathLike, noisy: torch.Tensor, fmt: str, batched: bool) -> Path:
    """Write ``noisy [B, 4, H, W]`` as ``.npy`` (same batch layout as the input) or a v7.3 ``.MAT`` (unpacked)."""
    from visionflows.data.sidd import unpack_raw
    from visionflows.io import atomic_write

    p = Path(path)
    arr = noisy.detach().cpu().numpy().astype(np.float32)
    if fmt == "npy":
        if p.suffix.lower() != ".npy":
            raise InputError(f"--out {p} must end in .npy like the --clean file.", "use e.g. noisy.npy.")
        with atomic_write(p, "wb") as fh:
            np.save(fh, arr if batched else arr[0])
    else:
        if p.suffix.lower() != ".mat":
            raise InputError(f"--out {p} must end in .MAT like the --clean file.", "use e.g. noisy.MAT.")
        if arr.shape[0] != 1:
            raise InputError(f"a .MAT file holds one image, but there are {arr.shape[0]}.", "write .npy instead.")
        write_raw_mat(p, np.asarray(unpack_raw(arr[0])))
    return p
