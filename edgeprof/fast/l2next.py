"""Later weights the decode attention brings into L2 while it runs (issue 12, fifteenth pass).

Attention at batch 1 is latency-bound: at ctx 2048 on Qwen2.5-7B its 32 CTAs read 4 MB in ~6 us, so DRAM idles
for most of it. The GEMVs after it stream constant weights: o (6.4 MB at int4) and gate_up (68 MB). The attention
kernel (csrc/attn_decode.cu, `l2_prefetch`) can issue bulk L2 prefetches of those before its PDL wait, so part
of their stream moves into attention's idle DRAM time. This module turns a spec into the kernel's ranges:

  "none"        nothing (the default until a measurement says otherwise)
  "o"           the o projection's packed weights and scales, whole
  "gu:T"        the first T 512-byte tiles of every gate_up row block (its CTAs stream row blocks along K, so each
                finds the same share of its stream in L2; a share of the whole buffer would leave some CTAs slower)
  "lines"       issue one `prefetch.global.L2` per 128-byte line instead of one bulk prefetch per piece

Items combine with commas ("o,gu:8"). Only edgeprof's CUDA int4 layers in the row-block layout take part; others
are skipped and `describe` says so. A range is (address, stride, pieces, bytes per piece, the last piece's bytes):
the binding's `l2` argument, 5 ints per range, at most MAX_RANGES.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ENV = "EDGEPROF_ATTN_L2"
DEFAULT = "none"
MAX_RANGES = 3  # csrc/attn_decode.cu kL2Ranges
TILE_BYTES = 512  # one 16-row x 64-column tile of the packed int4 layout
BULK_PIECE = 16 << 10  # bytes per bulk prefetch of a whole buffer: enough pieces to spread over the attention's CTAs
LINE_PIECE = 2 << 10  # bytes per piece in "lines" mode: 16 prefetches per thread and piece


@dataclass(frozen=True)
class L2Spec:
    o: bool = False
    gate_up_tiles: int = 0
    lines: bool = False

    @property
    def empty(self) -> bool:
        return not self.o and self.gate_up_tiles == 0

    def label(self) -> str:
        if self.empty:
            return "none"
        parts = (["o"] if self.o else []) + ([f"gu:{self.gate_up_tiles}"] if self.gate_up_tiles else [])
        return ",".join(parts + (["lines"] if self.lines else []))


def parse(spec: str | None = None) -> L2Spec:
    """The spec from `spec` or $EDGEPROF_ATTN_L2 (DEFAULT when unset); ValueError naming the variable otherwise."""
    text = (os.environ.get(ENV, "") if spec is None else spec).strip() or DEFAULT
    if text == "none":
        return L2Spec()
    o, tiles, lines = False, 0, False
    for item in (p.strip() for p in text.split(",")):
        if item == "o":
            o = True
        elif item == "lines":
            lines = True
        elif item.startswith("gu:") and item[3:].isdigit() and int(item[3:]) > 0:
            tiles = int(item[3:])
        else:
            raise ValueError(f"{ENV}: {item!r} in {text!r} is not one of none, o, gu:T (T > 0 tiles), lines; "
                             f"combine items with commas, e.g. 'o,gu:8', or unset it for {DEFAULT!r}")
    return L2Spec(o, tiles, lines)


def whole(address: int, nbytes: int, piece: int) -> tuple[int, int, int, int, int]:
    """A contiguous buffer as pieces of `piece` bytes (the last one shorter)."""
    _check16(address, nbytes, piece)
    n = -(-nbytes // piece)
    return address, piece, n, piece, nbytes - (n - 1) * piece


def strided(address: int, blocks: int, stride: int, nbytes: int) -> tuple[int, int, int, int, int]:
    """The first `nbytes` of each of `blocks` blocks `stride` bytes apart."""
    _check16(address, stride, nbytes)
    return address, stride, blocks, nbytes, nbytes


def _check16(*values: int) -> None:
    if any(v % 16 for v in values) or any(v <= 0 for v in values[1:]):
        raise ValueError(f"L2 prefetch ranges need positive sizes and 16-byte alignment, got {values}")


def row_block_ranges(address: int, n: int, k: int, tiles: int) -> tuple[int, int, int, int, int]:
    """The first `tiles` tiles of each row block of a packed int4 weight [N/16, K/64, 32, 4] (int32)."""
    per_block = k // 64 * TILE_BYTES
    return strided(address, n // 16, per_block, min(tiles, k // 64) * TILE_BYTES)


def layer_ranges(spec: L2Spec, o, gate_up) -> tuple[list[int], str | None]:
    """(the binding's flat l2 list for one layer, why something was skipped or None). o / gate_up: the layer's
    linears; only w4cuda.W4CudaLinear in the row-block layout take part."""
    piece = LINE_PIECE if spec.lines else BULK_PIECE
    ranges, skipped = [], []
    if spec.o:
        p = _packed(o)
        if p is None:
            skipped.append("o is not edgeprof's row-block int4")
        else:
            ranges += [whole(p.qw.data_ptr(), p.qw.numel() * 4, piece), whole(p.sz.data_ptr(), p.sz.numel() * 2, piece)]
    if spec.gate_up_tiles:
        p = _packed(gate_up)
        if p is None:
            skipped.append("gate_up is not edgeprof's row-block int4")
        else:
            ranges.append(row_block_ranges(p.qw.data_ptr(), p.n, p.k, spec.gate_up_tiles))
    flat = [v for r in ranges[:MAX_RANGES] for v in r]
    return flat, ("; ".join(skipped) or None)


def _packed(lin):
    p = getattr(lin, "p", None)
    return p if p is not None and getattr(p, "layout", None) == "rowblock" and hasattr(p, "qw") else None
