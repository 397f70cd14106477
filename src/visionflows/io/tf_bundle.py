"""Pure-Python reader of TensorFlow v2 checkpoints ("tensor bundles"), no TensorFlow needed.

A bundle is ``<prefix>.index`` (a LevelDB-format SSTable mapping tensor names to ``BundleEntryProto``)
plus ``<prefix>.data-XXXXX-of-YYYYY`` shards holding the raw little-endian tensor bytes. The layout
(footer, blocks with shared-prefix keys and restart arrays, 5-byte block trailers, protobuf fields) is
described in ``docs/noiseflow.md`` §3 of the reference material and in the public LevelDB table format
documentation (``doc/table_format.md`` of google/leveldb). CRC-32C (Castagnoli) checksums are verified in
their *masked* form, ``((c >> 15) | (c << 17)) + 0xa282ead8`` (LevelDB ``util/crc32c.h``), which TensorFlow
uses for both block trailers and tensor entries.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from visionflows.errors import CheckpointError

__all__ = ["read_tf_checkpoint", "crc32c", "masked_crc32c", "TF_DTYPES"]

_MAGIC = 0xDB4775248B80FB57  # LevelDB table magic number (little-endian in the last 8 bytes of the file)
_FOOTER_LEN = 48
_TRAILER_LEN = 5  # 1 byte compression type + 4 bytes masked crc32c

#: TensorFlow ``DataType`` enum value -> little-endian numpy dtype (types.proto).
TF_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}


def _make_crc_table() -> np.ndarray:
    poly = 0x82F63B78  # reflected Castagnoli polynomial
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table[i] = c
    return table


_CRC_TABLE = [int(v) for v in _make_crc_table()]


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, optionally extending ``crc``.

    Check value: ``crc32c(b"123456789") == 0xE3069283``.
    """
    table = _CRC_TABLE
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """Masked CRC-32C as stored by LevelDB / TensorFlow: rotate right by 15 bits, add 0xa282ead8."""
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(buf: bytes, pos: int, where: str) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CheckpointError(
                f"Corrupt TensorFlow checkpoint: truncated or malformed varint in {where}.",
                "Re-download the checkpoint (.index and .data files) from the official source.",
            )
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes, where: str) -> list[tuple[int, int, int | bytes]]:
    """Decode a protobuf message into (field number, wire type, value) triples."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos, where)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            val, pos = _varint(buf, pos, where)
            out.append((field, wire, val))
        elif wire == 1:
            if pos + 8 > len(buf):
                break
            out.append((field, wire, struct.unpack_from("<Q", buf, pos)[0]))
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos, where)
            if pos + n > len(buf):
                break
            out.append((field, wire, bytes(buf[pos : pos + n])))
            pos += n
        elif wire == 5:
            if pos + 4 > len(buf):
                break
            out.append((field, wire, struct.unpack_from("<I", buf, pos)[0]))
            pos += 4
        else:
            break
    else:
        return out
    raise CheckpointError(
        f"Corrupt TensorFlow checkpoint: malformed protobuf in {where}.",
        "Re-download the checkpoint (.index and .data files) from the official source.",
    )


def _resolve_prefix(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*.index"))
        if not found:
            raise CheckpointError(
                f"No TensorFlow checkpoint index (*.index) found in directory {p}.",
                "Point to the folder holding e.g. 'model.ckpt.best.index' and its .data-* file, "
                "or pass the checkpoint prefix.",
            )
        if len(found) > 1:
            best = [f for f in found if f.name.endswith(".best.index")]
            if len(best) != 1:
                raise CheckpointError(
                    f"Several checkpoint indexes in {p}: {', '.join(f.name for f in found)}.",
                    "Pass the checkpoint prefix explicitly, e.g. '<dir>/model.ckpt.best'.",
                )
            found = best
        return found[0].with_suffix("")
    if p.suffix == ".index":
        p = p.with_suffix("")
    elif ".data-" in p.name:
        p = p.with_name(p.name.split(".data-")[0])
    if not Path(str(p) + ".index").is_file():
        raise CheckpointError(
            f"TensorFlow checkpoint index not found: {p}.index.",
            "Pass an existing checkpoint prefix (e.g. 'ckpt/model.ckpt.best') or the folder that holds it.",
        )
    return p


def _read_block(index: bytes, offset: int, size: int, name: str, verify_crc: bool) -> bytes:
    end = offset + size + _TRAILER_LEN
    if offset < 0 or end > len(index):
        raise CheckpointError(
            f"Corrupt or truncated checkpoint index {name}: block at offset {offset} (size {size}) "
            f"runs past the end of the file ({len(index)} bytes).",
            "Re-download the .index file.",
        )
    block = index[offset : offset + size]
    ctype = index[offset + size]
    if ctype != 0:
        raise CheckpointError(
            f"Checkpoint index {name} uses block compression type {ctype}; only uncompressed blocks are supported.",
            "Re-save the checkpoint with TensorFlow (bundles are written uncompressed by default).",
        )
    if verify_crc:
        stored = struct.unpack_from("<I", index, offset + size + 1)[0]
        if masked_crc32c(index[offset : offset + size + 1]) != stored:
            raise CheckpointError(
                f"Corrupt checkpoint index {name}: CRC-32C mismatch in block at offset {offset}.",
                "Re-download the .index file.",
            )
    return block


def _block_entries(block: bytes, name: str) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise CheckpointError(f"Corrupt checkpoint index {name}: block too short.", "Re-download the file.")
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * n_restarts
    if limit < 0:
        raise CheckpointError(
            f"Corrupt checkpoint index {name}: bad restart count {n_restarts}.", "Re-download the file."
        )
    entries: list[tuple[bytes, bytes]] = []
    pos = 0
    key = b""
    while pos < limit:
        shared, pos = _varint(block, pos, name)
        non_shared, pos = _varint(block, pos, name)
        vlen, pos = _varint(block, pos, name)
        if shared > len(key) or pos + non_shared + vlen > limit:
            raise CheckpointError(
                f"Corrupt checkpoint index {name}: block entry overruns its block.", "Re-download the file."
            )
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos : pos + vlen]))
        pos += vlen
    return entries


def _parse_shape(buf: bytes, where: str) -> tuple[int, ...]:
    dims: list[int] = []
    for field, wire, val in _proto_fields(buf, where):
        if field == 2 and wire == 2:
            size = 0
            for f2, w2, v2 in _proto_fields(val, where):  # type: ignore[arg-type]
                if f2 == 1 and w2 == 0:
                    size = int(v2)  # type: ignore[arg-type]
                    if size >= 1 << 63:
                        size -= 1 << 64
            if size < 0:
                raise CheckpointError(
                    f"Checkpoint tensor {where} has an unknown dimension ({size}).",
                    "Only fully defined shapes can be read.",
                )
            dims.append(size)
        elif field == 3 and wire == 0 and val:
            raise CheckpointError(
                f"Checkpoint tensor {where} has unknown rank.", "Only fully defined shapes can be read."
            )
    return tuple(dims)


def read_tf_checkpoint(ckpt_prefix_or_dir: str | Path, verify_crc: bool = True) -> dict[str, np.ndarray]:
    """Read every tensor of a TensorFlow v2 checkpoint bundle.

    Args:
        ckpt_prefix_or_dir: checkpoint prefix (``.../model.ckpt.best``), its ``.index`` / ``.data-*`` file,
            or a directory holding exactly one ``*.index`` (or one ``*.best.index``).
        verify_crc: check the masked CRC-32C of every index block and every tensor (pure Python,
            about 1 MB/s; disable for large checkpoints).

    Returns:
        ``{name: array}`` in index (sorted) order; arrays are native-endian copies with the stored shape
        (a scalar has shape ``()``).

    Raises:
        CheckpointError: missing files, bad magic, truncated/corrupt data, CRC mismatch, unsupported dtype.
    """
    prefix = _resolve_prefix(ckpt_prefix_or_dir)
    index_path = Path(str(prefix) + ".index")
    try:
        index = index_path.read_bytes()
    except OSError as exc:
        raise CheckpointError(
            f"Cannot read checkpoint index {index_path}: {exc}.", "Check the path and its permissions."
        ) from exc
    name = str(index_path)
    if len(index) < _FOOTER_LEN:
        raise CheckpointError(
            f"Checkpoint index {name} is truncated ({len(index)} bytes; a table needs at least 48).",
            "Re-download the .index file.",
        )
    footer = index[-_FOOTER_LEN:]
    magic = struct.unpack_from("<Q", footer, 40)[0]
    if magic != _MAGIC:
        raise CheckpointError(
            f"{name} is not a TensorFlow checkpoint index (bad table magic {magic:#018x}).",
            "Pass the '.index' file of a TensorFlow v2 checkpoint (not a v1 .ckpt or a SavedModel).",
        )
    _, p = _varint(footer, 0, name)
    _, p = _varint(footer, p, name)  # metaindex handle (unused)
    idx_off, p = _varint(footer, p, name)
    idx_size, p = _varint(footer, p, name)
    index_block = _read_block(index, idx_off, idx_size, name, verify_crc)

    raw_entries: list[tuple[bytes, bytes]] = []
    for _, handle in _block_entries(index_block, name):
        off, q = _varint(handle, 0, name)
        size, _ = _varint(handle, q, name)
        raw_entries.extend(_block_entries(_read_block(index, off, size, name, verify_crc), name))

    num_shards = 1
    tensors: list[tuple[str, dict[int, int | bytes]]] = []
    for key, value in raw_entries:
        if key == b"":  # BundleHeaderProto: field 1 = num_shards
            for field, wire, val in _proto_fields(value, f"{name} header"):
                if field == 1 and wire == 0:
                    num_shards = int(val)  # type: ignore[arg-type]
            continue
        tname = key.decode("utf-8", errors="replace")
        fields: dict[int, int | bytes] = {}
        for field, _wire, val in _proto_fields(value, f"{name} entry {tname!r}"):
            fields.setdefault(field, val)
        if 7 in fields:
            raise CheckpointError(
                f"Checkpoint tensor {tname!r} in {name} is stored as partitioned slices (unsupported).",
                "Re-save the checkpoint without partitioned variables.",
            )
        tensors.append((tname, fields))
    if num_shards < 1:
        raise CheckpointError(f"Checkpoint {name} declares {num_shards} shards.", "Re-download the checkpoint.")

    shards: dict[int, bytes] = {}

    def shard_bytes(shard: int) -> bytes:
        if shard not in shards:
            path = Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")
            if not path.is_file():
                raise CheckpointError(
                    f"Checkpoint data file missing: {path}.",
                    "Keep the '.data-XXXXX-of-YYYYY' file(s) next to the '.index' file.",
                )
            shards[shard] = path.read_bytes()
        return shards[shard]

    out: dict[str, np.ndarray] = {}
    for tname, f in tensors:
        dtype_id = int(f.get(1, 0))  # type: ignore[arg-type]
        if dtype_id not in TF_DTYPES:
            raise CheckpointError(
                f"Checkpoint tensor {tname!r} has unsupported TensorFlow dtype enum {dtype_id}.",
                f"Only numeric dtypes {sorted(TF_DTYPES)} are supported; cast the variable before saving.",
            )
        dtype = TF_DTYPES[dtype_id]
        shape = _parse_shape(f.get(2, b""), tname)  # type: ignore[arg-type]
        shard = int(f.get(3, 0))  # type: ignore[arg-type]
        offset = int(f.get(4, 0))  # type: ignore[arg-type]
        size = int(f.get(5, 0))  # type: ignore[arg-type]
        count = int(np.prod(shape, dtype=np.int64))
        if size != count * dtype.itemsize:
            raise CheckpointError(
                f"Checkpoint tensor {tname!r}: stored size {size} bytes does not match shape {shape} "
                f"of {dtype} ({count * dtype.itemsize} bytes).",
                "The index is corrupt; re-download the checkpoint.",
            )
        data = shard_bytes(shard)
        if offset + size > len(data):
            raise CheckpointError(
                f"Checkpoint data file for shard {shard} is truncated: tensor {tname!r} needs bytes "
                f"[{offset}, {offset + size}) but the file has {len(data)} bytes.",
                "Re-download the '.data-*' file; it is incomplete.",
            )
        chunk = data[offset : offset + size]
        if verify_crc and 6 in f and masked_crc32c(chunk) != int(f[6]):  # type: ignore[arg-type]
            raise CheckpointError(
                f"Checkpoint tensor {tname!r}: CRC-32C mismatch in the data file (corrupt bytes).",
                "Re-download the '.data-*' file.",
            )
        arr = np.frombuffer(chunk, dtype=dtype).astype(dtype.newbyteorder("="), copy=True)
        out[tname] = arr.reshape(shape)
    return out
