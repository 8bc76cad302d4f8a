"""Where does llama.cpp's model load crash? Each case loads a GGUF in its own subprocess (a segfault
only ends that case) and the table says which ones survive; a crashing case is re-run under gdb
(when there is one) for the native backtrace. Also records which shared libraries the process
really mapped (libllama/libggml*/libstdc++/libgomp/CUDA/NCCL), LD_LIBRARY_PATH and LD_PRELOAD:
libllama's RUNPATH is $ORIGIN, which LD_LIBRARY_PATH overrides, so a second libggml on that path
would be picked up.

Cases: a tiny SYNTHETIC qwen2 GGUF and the SYNTHETIC qwen2.5-7b GGUF, each with n_gpu_layers 0 and -1.
CPU run (here): python benchmarks/llamacpp_load_probe.py --out /tmp/probe --device cpu
Device: same PYTHONPATH as benchmarks/llamacpp_cuda_build.sh bench, with --device cuda.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import ctypes, json, os, sys, faulthandler
faulthandler.enable()
if os.environ.get("PROBE_TORCH_FIRST") == "1":  # as edgeprof's backend runs: torch (and its CUDA libs) loaded first
    import torch
    torch.zeros(1, device="cuda")
if os.environ.get("PROBE_PROMOTE") == "1":  # edgeprof's fix (backends/llamacpp.py), before llama_cpp loads
    from edgeprof.backends.llamacpp import promote_cxx_runtime
    print("PROMOTED", promote_cxx_runtime(), flush=True)
import llama_cpp
path, ngl = sys.argv[1], int(sys.argv[2])
llama_cpp.llama_backend_init()
libs = sorted({l.split()[-1] for l in open('/proc/self/maps') if '.so' in l and any(
    k in l for k in ('llama', 'ggml', 'stdc++', 'gomp', 'cuda', 'nccl'))})
print('LIBS ' + json.dumps(libs), flush=True)
p = llama_cpp.llama_model_default_params(); p.n_gpu_layers = ngl
m = llama_cpp.llama_model_load_from_file(path.encode(), p)
print('LOADED', bool(m), flush=True)
if m:
    cp = llama_cpp.llama_context_default_params(); cp.n_ctx = 64; cp.n_batch = cp.n_ubatch = 8
    ctx = llama_cpp.llama_init_from_model(m, cp)
    b = llama_cpp.llama_batch_get_one((llama_cpp.llama_token * 2)(1, 2), 2)
    print('DECODE', llama_cpp.llama_decode(ctx, b), flush=True)
"""


def _case(path: Path, ngl: int, timeout: int, preload: str = "", torch_first: bool = False,
          promote: bool = False) -> dict:
    env = {**os.environ, **({"LD_PRELOAD": preload} if preload else {}), "PROBE_TORCH_FIRST": str(int(torch_first)),
           "PROBE_PROMOTE": str(int(promote))}
    r = subprocess.run([sys.executable, "-c", CHILD, str(path), str(ngl)], capture_output=True, text=True,
                       timeout=timeout, env=env)
    out = r.stdout + r.stderr
    libs = next((json.loads(x[5:]) for x in r.stdout.splitlines() if x.startswith("LIBS ")), None)
    rec = {"gguf": path.name, "n_gpu_layers": ngl, "preload": preload, "torch_first": torch_first,
           "promote": promote, "rc": r.returncode,
           "loaded": "LOADED True" in out,
           "decode_rc": next((x.split()[1] for x in out.splitlines() if x.startswith("DECODE ")), None),
           "libs": libs, "tail": out[-3000:]}
    # killed by a signal: the native stack says where (the device image has cuda-gdb, not gdb; cuda-gdb
    # also debugs host code)
    dbg = shutil.which("gdb") or shutil.which("cuda-gdb")
    if r.returncode < 0 and dbg:
        g = subprocess.run([dbg, "-batch", "-ex", "run", "-ex", "bt 40", "--args", sys.executable, "-c", CHILD,
                            str(path), str(ngl)], capture_output=True, text=True, timeout=timeout, env=env)
        rec["debugger"] = dbg
        rec["gdb_bt"] = "\n".join(x for x in g.stdout.splitlines() if x.startswith("#"))[-6000:]
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu", help="cpu: n_gpu_layers 0 only; cuda: 0 and -1")
    ap.add_argument("--gguf-dir", default="/tmp/edgeprof-gguf")
    ap.add_argument("--big", default="qwen2.5-7b", help="preset of the big SYNTHETIC GGUF ('' to skip)")
    ap.add_argument("--timeout", type=int, default=240)
    ap.add_argument("--torch-first", action="store_true", help="also load on the GPU with torch imported first")
    ap.add_argument("--toolkit-libs", default="", help="':'-separated CUDA toolkit libraries to LD_PRELOAD in a "
                    "torch-first pass (libcudart, libcublas, libcublasLt the build linked)")
    ap.add_argument("--preload", default="", help="a library (e.g. the build compiler's libstdc++.so.6) to "
                    "LD_PRELOAD in a second pass over the cases when one crashes")
    args = ap.parse_args()
    from edgeprof import synthetic_gguf
    from edgeprof.shape_loader import load_presets

    presets, gdir = load_presets(), Path(args.gguf_dir)
    tiny = dataclasses.replace(presets["qwen2.5-7b"], name="tiny-qwen2", n_layers=2, hidden=128, n_heads=4,
                               n_kv_heads=2, head_dim=32, intermediate=256, vocab=1000, max_ctx=512)
    files = [synthetic_gguf.write(tiny, gdir / "tiny-qwen2-synthetic-q4_0.gguf", tile_rows=256)]
    if args.big:
        big = gdir / f"{args.big}-synthetic-q4_0.gguf"  # the name llamacpp_decode.py uses: reused if there
        files.append(big if big.is_file() else synthetic_gguf.write(presets[args.big], big))
    ngls = [0, -1] if args.device.startswith("cuda") else [0]
    recs = [_case(f, n, args.timeout) for f in files for n in ngls]
    # a crash, then the same case with the build compiler's libstdc++ preloaded: libllama built by a
    # newer g++ than the one that built the process's libstdc++ is a known way to crash in std::stringstream
    if args.preload and any(r["rc"] < 0 for r in recs):
        recs += [_case(f, n, args.timeout, args.preload) for f in files for n in ngls]
    # edgeprof's backend imports torch before llama_cpp: torch's CUDA libraries (same sonames) are then the
    # ones libggml-cuda binds to. The GPU loads again that way, and with the toolkit's libraries preloaded.
    if args.torch_first and ngls[-1] == -1:
        recs += [_case(f, -1, args.timeout, torch_first=True) for f in files]
        recs += [_case(f, -1, args.timeout, torch_first=True, promote=True) for f in files]  # the backend's fix
        if args.preload:  # the same fix from outside: the runtime first in the global scope
            recs += [_case(f, -1, args.timeout, args.preload, torch_first=True) for f in files]
        if args.toolkit_libs:
            recs += [_case(f, -1, args.timeout, args.toolkit_libs, torch_first=True) for f in files]
    env = {k: os.environ.get(k) for k in ("LD_LIBRARY_PATH", "LD_PRELOAD", "CUDA_VISIBLE_DEVICES", "PYTHONPATH")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "load_probe.json").write_text(json.dumps({"env": env, "python": sys.executable, "cases": recs}, indent=1))
    print("env:", json.dumps(env))
    print("libs mapped:", *(recs[0]["libs"] or ["(none: import failed)"]), sep="\n  ")
    for r in recs:
        if r["rc"] != 0:
            print(f"--- {r['gguf']} ngl={r['n_gpu_layers']} preload={r['preload'] or '-'} rc={r['rc']}\n{r['tail'][-1500:]}\n{r.get('gdb_bt', '')}")
    print("| gguf | n_gpu_layers | torch first | libstdc++ promoted | LD_PRELOAD | rc | loaded | llama_decode rc |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in recs:
        print(f"| {r['gguf']} | {r['n_gpu_layers']} | {r['torch_first']} | {r['promote']} | {r['preload'] or '-'} | "
              f"{r['rc']} | {r['loaded']} | {r['decode_rc']} |")
    for r in recs:
        if r["torch_first"]:
            print(f"libs mapped (torch first, preload {r['preload'] or '-'}):", *(r["libs"] or ["?"]), sep="\n  ")


if __name__ == "__main__":
    main()
