"""The .pef artifact: a compiled plan as msgpack (never pickle), versioned and checksummed.

Layout: ``b"SN40LPEF"`` | format version (uint32, big-endian) | SHA-256 of the payload (32 bytes)
| msgpack payload. A file that is truncated, corrupt, of another version or not a .pef at all is
refused with a message that says which; a well-formed one is validated field by field
(:mod:`sn40l.compiler.validate`) before it is used.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import msgpack

from sn40l.compiler.validate import decode, validate_plan
from sn40l.errors import CompileError

MAGIC = b"SN40LPEF"
VERSION = 1
_HEADER = struct.Struct(">8sI32s")


@dataclass(frozen=True)
class Artifact:
    """A compiled model: the plan of :func:`sn40l.compiler.plan.compile_plan` as plain data."""

    plan: dict

    @property
    def hbm_bytes_per_socket(self) -> int:
        return int(self.plan["memory"]["hbm_bytes"])

    @property
    def ddr_bytes_per_socket(self) -> int:
        return int(self.plan["memory"]["ddr_bytes"])

    @property
    def tp(self) -> int:
        return int(self.plan["config"]["tp"])

    def to_bytes(self) -> bytes:
        payload = msgpack.packb(self.plan, use_bin_type=True)
        return _HEADER.pack(MAGIC, VERSION, hashlib.sha256(payload).digest()) + payload

    @classmethod
    def from_bytes(cls, data: bytes, origin: str = "artifact") -> "Artifact":
        if len(data) < _HEADER.size:
            raise CompileError(f"{origin}: truncated: {len(data)} bytes is shorter than the "
                               f"{_HEADER.size}-byte .pef header")
        magic, version, digest = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise CompileError(f"{origin}: not a .pef file (starts with {magic!r}, expected "
                               f"{MAGIC!r})")
        if version != VERSION:
            raise CompileError(f"{origin}: .pef format version {version}; this sn40l reads "
                               f"version {VERSION} only (recompile with 'sn40l compile')")
        payload = data[_HEADER.size:]
        if hashlib.sha256(payload).digest() != digest:
            raise CompileError(f"{origin}: checksum mismatch: the file is corrupt or truncated "
                               f"({len(payload)} payload bytes)")
        plan = decode(payload, origin)
        validate_plan(plan, origin)  # every field, before anything is allocated or generated
        return cls(plan)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        try:
            tmp.write_bytes(self.to_bytes())
            tmp.replace(path)  # never a half-written .pef
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CompileError(f"cannot write {path}: {exc.strerror or exc}") from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Artifact":
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CompileError(f"cannot read {path}: {exc.strerror}") from None
        return cls.from_bytes(data, origin=str(path))
