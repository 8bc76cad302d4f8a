"""Instructions per 64-column tile in the W4A16 GEMV's main loop, read from SASS (no GPU needed).

The innermost loop that holds the mma.sync instructions (HMMA) is the weight loop; one 16-row x 64-column
tile takes 4 HMMA, so instructions / (HMMA / 4) is what the SM issues per 512 bytes of weights.

    nvcc -O3 -std=c++17 -arch=sm_90 -cubin -o w4.cubin edgeprof/fast/csrc/w4a16_gemv.cu
    cuobjdump -sass w4.cubin > w4.sass
    python benchmarks/sass_loop_stats.py w4.sass [name-substring ...]
"""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+((?:@!?U?P[0-9T] )?[A-Z][A-Z0-9_.]*)")
BRANCH = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[0-9T] )?BRA (0x[0-9a-f]+)")


def functions(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    name = None
    for line in text.splitlines():
        if "Function : " in line:
            name = line.split("Function : ")[1].strip()
            out[name] = []
        elif name:
            out[name].append(line)
    return out


def weight_loop(lines: list[str]) -> tuple[int, int, collections.Counter] | None:
    """(instructions, HMMA, opcode counts) of the smallest backward-branch loop holding >= 8 HMMA."""
    ins = [(int(m.group(1), 16), m.group(2).split()[-1]) for ln in lines if (m := INSTR.search(ln))]
    best = None
    for ln in lines:
        m = BRANCH.search(ln)
        if not m or int(m.group(2), 16) >= int(m.group(1), 16):
            continue
        lo, hi = int(m.group(2), 16), int(m.group(1), 16)
        body = [op for ad, op in ins if lo <= ad <= hi]
        hmma = sum(op.startswith("HMMA") for op in body)
        if hmma >= 8 and (best is None or len(body) < best[0]):
            best = (len(body), hmma, collections.Counter(op.split(".")[0] for op in body))
    return best


def main(argv: list[str]) -> int:
    text = Path(argv[0]).read_text()
    wanted = argv[1:]
    print("| kernel | loop instructions | HMMA | per 64-column tile | LOP3 | SHF | IMAD | LDS |")
    print("|---|---|---|---|---|---|---|---|")
    for name, lines in functions(text).items():
        if wanted and not any(w in name for w in wanted):
            continue
        loop = weight_loop(lines)
        if loop:
            n, h, c = loop
            print(f"| {name[:90]} | {n} | {h} | {n / (h / 4):.1f} | {c['LOP3']} | {c['SHF']} | {c['IMAD']} | {c['LDS']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
