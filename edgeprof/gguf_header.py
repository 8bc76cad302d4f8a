"""The one GGUF reader: a GGUF file's header (key/value metadata and tensor names),
streamed without reading any weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprof.errors import ConfigError

_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


class _GGUFHeader:
    """Streams a GGUF header: key/values, then tensor names. Arrays are skipped and
    summarised by their length, so a 100k-token vocabulary costs milliseconds (the
    `gguf` package's GGUFReader decodes every element, ~10 s for SmolLM2)."""

    def __init__(self, fh: Any) -> None:
        import struct

        self.fh, self.struct = fh, struct
        magic = fh.read(4)
        if magic != b"GGUF":
            raise ValueError(f"bad magic {magic!r}")
        version = struct.unpack("<I", fh.read(4))[0]
        self.order = "<" if version & 0xFFFF else ">"  # a big-endian file reads as a huge version
        self.n_tensors, self.n_kv = self._unpack("QQ")

    def _unpack(self, fmt: str) -> tuple:
        size = self.struct.calcsize(self.order + fmt)
        data = self.fh.read(size)
        if len(data) != size:
            raise ValueError("truncated header")
        return self.struct.unpack(self.order + fmt, data)

    def _string(self) -> str:
        (n,) = self._unpack("Q")
        return self.fh.read(n).decode("utf-8", errors="replace")

    def _value(self, vtype: int) -> Any:
        if vtype == _GGUF_STRING:
            return self._string()
        if vtype == _GGUF_ARRAY:
            etype, count = self._unpack("IQ")
            if etype == _GGUF_STRING:
                for _ in range(count):
                    (n,) = self._unpack("Q")
                    self.fh.seek(n, 1)
            elif etype in _GGUF_SCALARS:
                self.fh.seek(count * self.struct.calcsize(self.order + _GGUF_SCALARS[etype]), 1)
            else:
                raise ValueError(f"unsupported array element type {etype}")
            return range(count)  # only the length is needed (e.g. vocabulary size)
        if vtype not in _GGUF_SCALARS:
            raise ValueError(f"unknown value type {vtype}")
        return self._unpack(_GGUF_SCALARS[vtype])[0]

    def metadata(self) -> dict[str, Any]:
        meta = {}
        for _ in range(self.n_kv):
            key = self._string()
            (vtype,) = self._unpack("I")
            meta[key] = self._value(vtype)
        return meta

    def tensor_names(self) -> list[str]:
        names = []
        for _ in range(self.n_tensors):
            names.append(self._string())
            (n_dims,) = self._unpack("I")
            self.fh.seek(8 * n_dims + 4 + 8, 1)  # dims (u64 each), ggml type (u32), data offset (u64)
        return names


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """Key/value metadata of a GGUF file (arrays summarised by length), plus
    `_has_output_weight`: whether the file stores a separate `output.weight` (untied head)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("model", f"no GGUF file at {path}; pass a preset name, a model directory or a .gguf file")
    try:
        with open(path, "rb") as fh:
            header = _GGUFHeader(fh)
            meta = header.metadata()
            meta["_has_output_weight"] = "output.weight" in header.tensor_names()
    except (ValueError, OverflowError, MemoryError) as exc:
        raise ConfigError("model", f"{path} is not a readable GGUF file ({exc})") from exc
    return meta
