"""Why does the GEMV's loop of weight loads alone run slower than a pure read of the same bytes (issue 12)?

The tenth pass timed, on an H200 with PDL, gate_up's int4 weights read by stream_pattern.py's `split` kernel at
16.8 µs, and the GEMV kernel with nothing but its weight loads (the diagnostic `nomathxsf`: no math, no x staging, no
scale loads, no finish) at 19.1 µs; the two loops compile to the same SASS. What differs is outside the loop: the
kernel (its prologue, 56 against ~32 registers, 7 KB of dynamic shared memory), and the harness (the tune's packed
int4 copies against stream_pattern.py's random int32 buffers, and their number). This benchmark takes the harness out:
ONE list of weight copies per data kind, read by both kernels in the same CUDA-graph chain timing (PDL on):

  data    random: uniform random int32 words (stream_pattern.py's buffers)
          int4:   packed int4 codes of Gaussian weights (round-to-nearest, mostly 4..12), as the GEMVs stream
          int4-6: int4 with the tune's number of copies (its copies hold the scales too: one fewer on gate_up)
          tune:   the tune's own copies (int4_gemv.py's _tune_cache: packed once, then qw and scales cloned in turn)
  kernel  read:      stream_pattern.py's `split` read kernel, 6 loads in flight per thread
          nomathxsf: the GEMV kernel with its weight loads alone (tuning module, diagnostic)
          base:      the GEMV itself (its output is meaningless on these buffers; only its time is used)

    python benchmarks/read_vs_gemv.py --out $OUT/read_vs_gemv.json

--transient: how long a chain runs slow after a trigger. gate_up's read chain on fixed int4 buffers is timed (10
replays per point) every ~25 ms for --seconds after each of: heavy bf16 matmuls for 1 s ("compute"); the tune's
check-input build of gate_up ("tune-build"); 4 GB allocated, written and freed ("alloc"). The SM clock (NVML) is
read at each point.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from int4_gemv import _copies, copy_bandwidth  # noqa: E402
from stream_pattern import PATTERNS  # noqa: E402
from stream_pattern import build as build_read  # noqa: E402

GROUP = 128
# (name, K, N, splits of the H200's shipped plan) of the two large Qwen2.5-7B GEMVs
SHAPES = [("gate_up", 3584, 37888, 1), ("down", 18944, 3584, 10)]
KERNELS = ("read", "nomathxsf", "base")
DATA = ("random", "int4", "int4-6", "tune")


def weight_words(n: int, k: int, data: str, gen: torch.Generator) -> torch.Tensor:
    """int32 [N/16, K/64, 32, 4]: the packed layout's shape, filled with `data`'s bits."""
    shape = (n // 16, k // 64, 32, 4)
    if data == "random":
        return torch.randint(-2**31, 2**31 - 1, shape, device="cuda", dtype=torch.int32, generator=gen)
    words = torch.zeros(shape, device="cuda", dtype=torch.int32)
    for i in range(8):  # one nibble at a time: an [..., 8] code tensor of gate_up would take 0.5 GB
        code = (torch.randn(shape, device="cuda", generator=gen) * 2.5 + 8).round().clamp(0, 15).to(torch.int32)
        words |= code << (4 * i)
    return words


def copies_of(name: str, n: int, k: int, data: str) -> list[torch.Tensor]:
    nbytes = n * k // 2
    if data == "tune":
        from int4_gemv import _tune_cache

        return [p.qw for p in _tune_cache(name, k, n)["copies"]]
    gen = torch.Generator(device="cuda").manual_seed(7)
    if data == "int4-6":  # as many as the tune's copies, whose size counts the scales (int4_gemv._copies)
        sz_bytes = n // 16 * k // GROUP * 8 * 2 * 2
        return [weight_words(n, k, "int4", gen) for _ in range(_copies(nbytes + sz_bytes))]
    return [weight_words(n, k, data, gen) for _ in range(_copies(nbytes))]


def chain(kernel: str, bufs: list[torch.Tensor], n: int, k: int, splits: int, read_ext) -> list:
    """One call per weight copy, as time_graph chains them."""
    if kernel == "read":
        sink = torch.zeros(1, device="cuda", dtype=torch.int32)
        return [lambda b=b: read_ext.launch_read(b, n // 16, k // 64, PATTERNS["split"], 6, 0, splits, True, 0, sink)
                for b in bufs]
    from edgeprof.fast.w4cuda import W4CudaLinear, W4Packed

    x = torch.randn(1, k, device="cuda").to(torch.bfloat16)
    layers = []
    for b in bufs:
        sz = (torch.rand(n // 16, k // GROUP, 8, 2, device="cuda") * 0.01 + 0.001).to(torch.bfloat16)
        layers.append(W4CudaLinear(W4Packed(b, sz, n, k, GROUP, False), splits=splits, variant=kernel,
                                   diagnostic=kernel != "base"))
    return [lambda li=li: li(x) for li in layers]


def sm_clock_mhz() -> int | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        return int(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM))
    except Exception:  # no NVML bindings: the series has no clock column
        return None


def trigger(kind: str) -> None:
    if kind == "compute":
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end:
            for _ in range(10):
                a @ a
            torch.cuda.synchronize()
    elif kind == "tune-build":
        import int4_gemv

        int4_gemv._TUNE_CACHE.clear()
        torch.cuda.empty_cache()
        int4_gemv._tune_cache("gate_up", 3584, 37888)
    else:  # alloc
        big = [torch.ones(256 << 20, device="cuda") for _ in range(4)]
        del big
        torch.cuda.empty_cache()
    torch.cuda.synchronize()


def transient(read_ext, seconds: float) -> dict:
    """{trigger: [(s after the trigger, µs per call, SM MHz)]} for gate_up's read chain on fixed buffers."""
    from edgeprof.timing import time_graph

    name, k, n, splits = SHAPES[0]
    bufs = copies_of(name, n, k, "int4")
    calls = chain("read", bufs, n, k, splits, read_ext)
    out: dict = {"before": [(0.0, time_graph(calls, 10).p50 * 1e3, sm_clock_mhz())]}
    for kind in ("compute", "tune-build", "alloc"):
        trigger(kind)
        t0, pts = time.perf_counter(), []
        while time.perf_counter() - t0 < seconds:
            dt = time.perf_counter() - t0
            pts.append((round(dt, 3), time_graph(calls, 10).p50 * 1e3, sm_clock_mhz()))
            time.sleep(0.02)
        out[kind] = pts
        print(kind, " ".join(f"{t:.2f}s:{us:.2f}" + (f"@{c}" if c else "") for t, us, c in pts[:12]), "...",
              " ".join(f"{t:.2f}s:{us:.2f}" for t, us, _ in pts[-3:]), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--transient", action="store_true", help="time the read chain after each trigger instead")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    from edgeprof.fast.w4cuda import use_pdl
    from edgeprof.timing import time_graph

    t0 = time.time()
    read_ext = build_read()
    bw = copy_bandwidth()
    rec = {"benchmark": "read_vs_gemv", "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "command": " ".join(sys.argv), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "copy_bw_bytes_per_s": bw, "pdl": True, "rows": []}
    if args.transient:
        rec["transient"] = transient(read_ext, args.seconds)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rec, indent=1))
        return 0
    print(f"{rec['gpu']}: copy bandwidth {bw / 1e12:.3f} TB/s; every chain with PDL\n"
          "| shape | splits | data | kernel | copies | µs | of copy bw |\n|---|---|---|---|---|---|---|")
    for name, k, n, splits in SHAPES:
        for data in DATA:
            bufs = copies_of(name, n, k, data)
            for kernel in KERNELS:
                calls = chain(kernel, bufs, n, k, splits, read_ext)
                use_pdl(True)  # every W4 module loaded by now (the read kernel sets its attribute itself)
                st = time_graph(calls, args.repeats)
                nbytes = n * k // 2
                r = {"shape": name, "k": k, "n": n, "splits": splits, "data": data, "kernel": kernel,
                     "copies": len(bufs), "us_p50": st.p50 * 1e3, "us_p90": st.p90 * 1e3,
                     "frac_copy_bw": nbytes / (st.p50 * 1e-3) / bw}
                rec["rows"].append(r)
                print(f"| {name} | {splits} | {data} | {kernel} | {len(bufs)} | {r['us_p50']:.2f} | "
                      f"{r['frac_copy_bw']:.3f} |", flush=True)
            del bufs
            torch.cuda.empty_cache()
    use_pdl(False)
    rec["wall_s"] = time.time() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
