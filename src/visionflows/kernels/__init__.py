"""Optional native CPU kernels, compiled on first use with the system C++ compiler and loaded with ``ctypes``.

Nothing here is needed to install or run visionflows: :func:`load` returns ``None`` when no compiler is found,
the build fails, or ``VISIONFLOWS_KERNELS=0`` is set, and every caller then uses its pure-PyTorch path (same
results up to float32 rounding). The sources ship with the package (``*.cpp`` and the shared ``vec.h`` next to
this file); a build is cached under ``$VISIONFLOWS_KERNEL_CACHE`` (default ``~/.cache/visionflows/kernels``; a
per-user temporary directory when that is not writable), keyed by the sources, the compiler, its flags and the
CPU's feature flags (the code is compiled with ``-march=native``; the vector width follows the CPU), and built once per
machine in about 5 s. The library is linked against the OpenMP runtime PyTorch already loaded (``libgomp.so.1``,
same soname), so its threads are the ones :func:`torch.set_num_threads` controls; every kernel also takes the
thread count explicitly.

Why a plain shared library and not ``torch.utils.cpp_extension``: that needs ``ninja`` and the PyTorch headers,
and a first build takes a minute; these kernels use raw float pointers and no PyTorch API.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

__all__ = ["load", "available", "build_error", "compiler"]

_HERE = Path(__file__).resolve().parent
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=c++17", "-fno-math-errno"]
_LOCK = threading.Lock()
_LIBS: dict[str, ctypes.CDLL | None] = {}
_ERRORS: dict[str, str] = {}


def compiler() -> str | None:
    """The C++ compiler used (``$CXX``, else ``c++``/``g++``/``clang++`` on ``PATH``), or ``None``."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.machine() + platform.processor()


def _cache_dir() -> Path:
    root = os.environ.get("VISIONFLOWS_KERNEL_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "visionflows" / "kernels"


def _disabled() -> bool:
    return os.environ.get("VISIONFLOWS_KERNELS", "1").strip().lower() in ("0", "false", "no", "off")


def _build(name: str) -> ctypes.CDLL:
    src = _HERE / f"{name}.cpp"
    text = src.read_bytes() + b"".join(h.read_bytes() for h in sorted(_HERE.glob("*.h")))  # shared headers
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++/clang++)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256(b"\0".join([text, cxx.encode(), version.encode(), " ".join(_FLAGS).encode(),
                                     _cpu_flags().encode(), sys.platform.encode()])).hexdigest()[:16]
    out = _cache_dir() / f"{name}-{key}.so"
    if not out.exists():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(out.parent, os.W_OK):
                raise PermissionError(str(out.parent))
        except OSError:  # read-only home: a per-user temporary directory
            out = Path(tempfile.gettempdir()) / f"visionflows-kernels-{os.getuid()}" / out.name
            out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", prefix=f".{name}-", dir=out.parent)
        os.close(fd)
        try:
            proc = subprocess.run([cxx, *_FLAGS, str(src), "-o", tmp], capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"{cxx} failed: {proc.stderr.strip()[-2000:]}")
            os.replace(tmp, out)  # atomic: concurrent builders race harmlessly
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    import torch  # noqa: F401  (loads PyTorch's libgomp first, so the library shares its OpenMP runtime)

    return ctypes.CDLL(str(out))


def load(name: str) -> ctypes.CDLL | None:
    """The compiled library ``name`` (``noiseflow``), building it on first use; ``None`` if unavailable."""
    if _disabled():
        return None
    with _LOCK:
        if name not in _LIBS:
            try:
                _LIBS[name] = _build(name)
            except Exception as exc:  # noqa: BLE001 - any failure means "use the PyTorch path"
                _LIBS[name] = None
                _ERRORS[name] = f"{type(exc).__name__}: {exc}"
        return _LIBS[name]


def available(name: str) -> bool:
    """Whether :func:`load` gives a library (builds it if needed)."""
    return load(name) is not None


def build_error(name: str) -> str | None:
    """Why :func:`load` returned ``None`` (``None`` if it did not, or if kernels are disabled)."""
    return _ERRORS.get(name)
