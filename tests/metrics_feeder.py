"""A small real decode loop that publishes edgeprof metrics (used by test_prometheus_integration).

Stand-in for the daemon while it cannot run on this machine yet: a tiny Llama built
from a config with random weights (SYNTHETIC, labelled so) decodes greedily with a KV
cache on the CPU; every step is timed with perf_counter and fed to a MetricsPublisher;
tokens are handed to a consumer thread through a queue (timed as the "bridge publish").
Protocol on stdio: prints `READY <port>`, waits for a `go` line, decodes, writes the raw
figures to --out, prints `DONE`, then serves metrics until stdin closes.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=40)
    args = ap.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from edgeprof.hardware_loader import gpu
    from edgeprof.metrics import MetricsPublisher

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = LlamaForCausalLM(cfg).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    emb_bytes = model.model.embed_tokens.weight.numel() * 4
    bw = gpu("cpu").bandwidth_bytes_per_s
    pub = MetricsPublisher({"model": "tiny-llama-synthetic", "backend": "feeder-loop", "gpu": "cpu", "weights": "fp32"},
                           {"synthetic": True, "device": "cpu"})
    pub.set_floor(weight_bytes / bw, (weight_bytes - emb_bytes + 64 * 4) / bw)
    port = pub.start_server("127.0.0.1", args.port)
    print(f"READY {port}", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1

    sink: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [sink.get() for _ in iter(int, 1)], daemon=True).start()
    walls, ttfts = [], []
    with torch.inference_mode():
        for r in range(args.requests):
            received = time.perf_counter()
            ids = torch.randint(0, cfg.vocab_size, (1, 16 + 8 * r))
            out = model(ids, use_cache=True)
            nxt = out.logits[:, -1:].argmax(-1)
            ttfts.append(time.perf_counter() - received)
            pub.observe_ttft(ttfts[-1])
            past = out.past_key_values
            deadline = None
            for _ in range(args.tokens):
                t0 = time.perf_counter()
                out = model(nxt, past_key_values=past, use_cache=True)
                nxt, past = out.logits[:, -1:].argmax(-1), out.past_key_values
                wall = time.perf_counter() - t0
                deadline = deadline or wall * 1.3  # the first step sets a tight deadline: some misses
                walls.append(wall)
                pub.observe_token(wall, None, deadline_missed=wall > deadline)
                t1 = time.perf_counter()
                sink.put(json.dumps({"id": r, "token_id": int(nxt)}))
                pub.observe_bridge_publish(time.perf_counter() - t1)
            pub.request_done("length")
    with open(args.out, "w") as fh:
        json.dump({"wall_s": walls, "ttft_s": ttfts}, fh)
    print("DONE", flush=True)
    sys.stdin.read()  # serve until the test closes our stdin
    pub.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
