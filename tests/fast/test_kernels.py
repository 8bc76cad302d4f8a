"""The Triton step kernels against the torch reference ops, on the CPU through Triton's
interpreter (TRITON_INTERPRET=1, set before triton is imported, hence the subprocess).

The GPU run of the same comparison is `check_kernels` in benchmarks/fast_decode.py.
"""

from __future__ import annotations

import importlib.util
import textwrap

import pytest

from .interpreted import run_interpreted

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed (pip install 'edgeprof[dev]' brings it)")

SCRIPT = textwrap.dedent("""
    import json, os, torch
    from edgeprof.fast.kernels import TorchOps, TritonOps
    torch.manual_seed(0)
    nh, nkv, hd, hidden, inter, max_ctx = 6, 2, 32, 96, 160, 600   # GQA group 3, 3 attention splits
    dt = torch.bfloat16
    half = torch.randn(max_ctx, hd // 2)
    cos, sin = torch.cat([half.cos()] * 2, 1).to(dt), torch.cat([half.sin()] * 2, 1).to(dt)
    ref, tri = TorchOps(nh, nkv, hd, 1e-6, cos, sin), TritonOps(nh, nkv, hd, 1e-6, cos, sin, max_ctx, hidden, inter)
    rel = lambda a, b: float((a.float() - b.float()).norm() / b.float().norm())
    out = {}
    x, r, w = (torch.randn(1, hidden).to(dt) for _ in range(3))
    out["rmsnorm"] = rel(tri.add_rmsnorm(x, r, w[0])[0], ref.add_rmsnorm(x, r, w[0])[0])
    kc, vc = torch.randn(nkv, max_ctx, hd).to(dt), torch.randn(nkv, max_ctx, hd).to(dt)
    kc2, vc2 = kc.clone(), vc.clone()
    qkv = torch.randn(1, (nh + 2 * nkv) * hd).to(dt)
    out["rope"], out["attention"] = 0.0, 0.0
    # attention plans: adaptive (default; 8 "SMs" on the CPU -> 8 splits), the first fixed-chunk version, 32-token blocks
    plans = {spec: TritonOps(nh, nkv, hd, 1e-6, cos, sin, max_ctx, hidden, inter)
             for spec in ("", "chunk:256", "min:32,block:32", "live:4", "live:2,block:32")
             if not os.environ.__setitem__("EDGEPROF_ATTN", spec)}
    out["plans"] = {spec or "adaptive": [t.chunk, t.block_n, t.s_max, t.live] for spec, t in plans.items()}
    fused = {spec: (kc.clone(), vc.clone()) for spec in plans}  # caches the fused rope+attention writes
    out["rope_attention"], out["fused_cache_rows"] = 0.0, 0.0
    for p in (0, 63, 255, 256, 599):
        pos = torch.tensor([p])
        qa = ref.rope_write_kv(qkv, pos, kc, vc).clone()
        qb = tri.rope_write_kv(qkv, pos, kc2, vc2).clone()
        out["rope"] = max(out["rope"], rel(qb.view(nh, hd), qa), rel(kc2, kc), rel(vc2, vc))
        want = ref.attention(qa, pos, kc, vc)
        for spec, t in plans.items():
            got = t.attention(qa.reshape(-1).contiguous(), pos, kc, vc)
            out["attention"] = max(out["attention"], rel(got, want))
            kf, vf = fused[spec]
            got = t.rope_attention(qkv, pos, kf, vf)  # rotates q/k and writes row p itself
            out["rope_attention"] = max(out["rope_attention"], rel(got, want))
            # the row it wrote, against the separate rope kernel's (same fp32 math, same bf16 rounding)
            out["fused_cache_rows"] = max(out["fused_cache_rows"], float((kf[:, p] - kc2[:, p]).abs().max()),
                                          float((vf[:, p] - vc2[:, p]).abs().max()))
    gu = torch.randn(1, 2 * inter).to(dt)
    out["silu_mul"] = rel(tri.silu_mul(gu), ref.silu_mul(gu))
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_triton_kernels_match_torch_reference_in_the_interpreter():
    errs = run_interpreted(SCRIPT, 600)
    # The interpreter emulates bf16 stores by truncation, so allow a little over one bf16 ulp.
    plans = errs.pop("plans")
    # max_ctx 600, 2 kv heads, 8 "SMs": adaptive = 4 splits of >= 128 tokens; chunk:256 = 3 live of 4;
    # live:4 = 2..7 live splits (scratch for 8); live:2 with 32-row blocks = 1..3 (scratch for 4)
    assert plans == {"adaptive": [-128, 64, 4, 0], "chunk:256": [256, 64, 4, 0], "min:32,block:32": [-32, 32, 4, 0],
                     "live:4": [0, 64, 8, 4], "live:2,block:32": [0, 32, 4, 2]}, plans
    assert errs.pop("fused_cache_rows") == 0.0  # bit-identical k/v rows from the fused and the separate rope
    for name, err in errs.items():
        assert err < 1.5e-2, (name, err)


# ------------------------------------------------------------------ attention split plan (pure)
def test_attn_plan_spreads_the_live_cache_over_about_one_cta_per_sm():
    from edgeprof.fast.kernels import attn_plan

    # H200-like: 132 SMs, Qwen2.5-7B's 4 kv heads -> 33 splits -> 64, >= 128 tokens each (chunk < 0: minimum)
    assert attn_plan(2048 + 64, 4, 132, "") == (-128, 64, 32, 0)  # 2112 / 128 -> 17 chunks of 128 -> 32
    assert attn_plan(16384 + 64, 4, 132, "") == (-128, 64, 64, 0)
    assert attn_plan(512, 4, 132, "") == (-128, 64, 4, 0)  # 4 chunks of 128: more splits would stay empty
    assert attn_plan(16448, 8, 58, "") == (-128, 64, 8, 0)  # L40S-like: 58 SMs, 8 kv heads -> 8


def _live_chunk(n_live: int, live: int, block: int) -> int:
    """What _attn_chunk computes on the device for a live:N plan (hand-written here)."""
    m = -(-n_live // (live * block))
    return block * (1 << (m.bit_length() - 1))


def test_attn_plan_live_keeps_half_to_twice_live_splits_within_its_scratch():
    from edgeprof.fast.kernels import attn_plan

    plan = attn_plan(16448, 4, 132, "live:64")
    assert plan == (0, 64, 128, 64)  # at most 2 * 64 - 1 live splits
    assert attn_plan(2112, 4, 132, "live:64") == (0, 64, 64, 64)  # 2112 / 64 = 33 blocks -> 64 is enough
    # r5's best chunks: 64 tokens at ctx 2048 (32 splits), 256 at 16384 (64 splits)
    assert _live_chunk(2048, 64, 64) == 64 and _live_chunk(16384, 64, 64) == 256
    for n in (1, 63, 64, 4096, 4097, 8191, 8192, 16448):
        splits = -(-n // _live_chunk(n, 64, 64))
        assert splits <= plan.splits and (n <= 64 * 64 or splits >= 32), (n, splits)


def test_attn_plan_overrides_and_errors():
    import pytest as _pytest

    from edgeprof.fast.kernels import attn_plan

    assert attn_plan(2112, 4, 132, "chunk:256") == (256, 64, 16, 0)  # the first version: 256-token chunks
    assert attn_plan(2112, 4, 132, "chunk:100") == (128, 64, 32, 0)  # whole blocks
    assert attn_plan(2112, 4, 132, "splits:16,block:32,min:32") == (-32, 32, 16, 0)
    assert attn_plan(16448, 4, 132, "min:64,splits:128") == (-64, 64, 128, 0)
    for bad in ("chunk", "rows:4", "splits:0", "block:48", "chunk:x", "live:0"):
        with _pytest.raises(ValueError, match="EDGEPROF_ATTN"):
            attn_plan(2112, 4, 132, bad)


# ------------------------------------------------------------------ which decode attention (pure)
def test_attn_kernel_spec_parses_the_cuda_shape_and_names_the_variable_on_bad_input():
    from edgeprof.fast.kernels import ATTN_CUDA_DEFAULT, parse_attn_kernel

    assert parse_attn_kernel("") == ("auto", *ATTN_CUDA_DEFAULT)
    assert parse_attn_kernel("auto") == ("auto", *ATTN_CUDA_DEFAULT)
    assert parse_attn_kernel("cuda") == ("cuda", *ATTN_CUDA_DEFAULT)
    assert parse_attn_kernel("cuda:16x4") == ("cuda", 16, 4)
    assert parse_attn_kernel(" triton ") == ("triton", 0, 0)
    for bad in ("cuda:17x8", "cuda:4x8", "cuda:0x8", "cuda:16x6", "cuda:16", "triton:16x8", "auto:8x8", "flash",
                "cuda:axb"):
        with pytest.raises(ValueError, match="EDGEPROF_ATTN_KERNEL"):
            parse_attn_kernel(bad)


def test_attn_kernel_falls_back_to_triton_with_the_reason(monkeypatch):
    from edgeprof.fast.kernels import ATTN_CUDA_MAX_CTX, AttnKernel, attn_kernel

    monkeypatch.delenv("EDGEPROF_ATTN_KERNEL", raising=False)
    cpu = attn_kernel(28, 4, 128, "cpu", 2048)
    assert cpu.kind == "triton" and cpu.why == "not a CUDA device"
    assert cpu.label() == "triton (split + reduce): not a CUDA device"
    long = attn_kernel(28, 4, 128, "cpu", ATTN_CUDA_MAX_CTX + 1)  # auto: the cache length decides first
    assert long.kind == "triton" and f"max_ctx {ATTN_CUDA_MAX_CTX + 1}" in long.why
    assert attn_kernel(28, 4, 128, "cpu", ATTN_CUDA_MAX_CTX + 1, "cuda").why == "not a CUDA device"  # forced
    asked = attn_kernel(28, 4, 128, "cpu", 2048, "triton")
    assert asked.kind == "triton" and "EDGEPROF_ATTN_KERNEL=triton" in asked.why
    monkeypatch.setenv("EDGEPROF_ATTN_KERNEL", "cuda:9x9")
    with pytest.raises(ValueError, match="EDGEPROF_ATTN_KERNEL"):
        attn_kernel(28, 4, 128, "cpu", 2048)
    assert AttnKernel("cuda", 16, 8).label() == "cuda (one launch, cluster of 16 CTAs x 8 warps per kv head)"
    assert AttnKernel("cuda", 8, 8, merge="push").label() == ("cuda (one launch, cluster of 8 CTAs x 8 warps per kv "
                                                              "head, merged by push)")


def test_the_attention_merge_is_pull_or_push_and_a_bad_value_names_the_variable(monkeypatch):
    from edgeprof.fast.kernels import ATTN_MERGE_DEFAULT, attn_kernel, attn_merge

    monkeypatch.delenv("EDGEPROF_ATTN_MERGE", raising=False)
    assert attn_merge() == ATTN_MERGE_DEFAULT
    monkeypatch.setenv("EDGEPROF_ATTN_MERGE", "push")
    assert attn_merge() == "push"
    monkeypatch.setenv("EDGEPROF_ATTN_MERGE", "gather")
    with pytest.raises(ValueError, match="EDGEPROF_ATTN_MERGE: 'gather' is not one of pull, push"):
        attn_kernel(28, 4, 128, "cpu", 2048)  # checked on the CPU too, where the CUDA kernel never runs


def test_pdl_is_off_on_the_cpu_and_a_bad_value_names_the_variable(monkeypatch):
    import pytest as _pytest

    from edgeprof.fast.kernels import pdl_wanted

    monkeypatch.delenv("EDGEPROF_PDL", raising=False)
    assert pdl_wanted("cpu") is False
    for val in ("1", "gemv"):
        monkeypatch.setenv("EDGEPROF_PDL", val)
        assert pdl_wanted("cpu") is False and pdl_wanted("cpu", "triton") is False  # griddepcontrol: sm_90+ GPUs
    monkeypatch.setenv("EDGEPROF_PDL", "yes")
    with _pytest.raises(ValueError, match="EDGEPROF_PDL"):
        pdl_wanted("cpu")
    with _pytest.raises(ValueError, match="part"):
        pdl_wanted("cpu", "attention")


def test_nodown_leaves_only_the_down_projection_out_of_pdl(monkeypatch):
    from edgeprof.fast.kernels import pdl_down_wanted, pdl_wanted

    monkeypatch.delenv("EDGEPROF_PDL", raising=False)
    assert pdl_down_wanted() is True  # in by default: leaving it out gave no consistent gain (r21, r22)
    for val, down in (("nodown", False), ("1", True), ("gemv", True), ("0", True)):
        monkeypatch.setenv("EDGEPROF_PDL", val)
        assert pdl_down_wanted() is down, val
        assert pdl_wanted("cpu") is False  # a valid value; still off on the CPU


def test_attention_clusters_per_head_fill_one_wave_and_only_past_one_clusters_limit():
    from edgeprof.fast.kernels import ATTN_MAX_CLUSTERS, ATTN_ONE_CLUSTER_MAX_CTX, attn_clusters_per_head

    assert attn_clusters_per_head(ATTN_ONE_CLUSTER_MAX_CTX, 4, 30, 512) == 1  # one cluster up to its limit
    assert attn_clusters_per_head(16384 + 64, 4, 30, 512) == 7  # 30 clusters fit the GPU at once: 7 per kv head
    assert attn_clusters_per_head(16384 + 64, 4, 15, 512) == 3
    assert attn_clusters_per_head(5000, 4, 30, 2048) == 3  # each takes at least tpc tokens of the cache
    assert attn_clusters_per_head(65536, 1, 62, 512) == ATTN_MAX_CLUSTERS  # the merge is unrolled to this many
    assert attn_clusters_per_head(16384, 8, 7, 512) == 1  # fewer fit than kv heads: one each


def test_attention_tokens_per_cluster_reads_its_variable_and_names_it(monkeypatch):
    from edgeprof.fast.kernels import ATTN_TOKENS_PER_CLUSTER, ATTN_TPC_ENV, attn_tokens_per_cluster

    monkeypatch.delenv(ATTN_TPC_ENV, raising=False)
    assert attn_tokens_per_cluster() == ATTN_TOKENS_PER_CLUSTER
    monkeypatch.setenv(ATTN_TPC_ENV, "1024")
    assert attn_tokens_per_cluster() == 1024
    for bad in ("100", "abc", "0"):
        monkeypatch.setenv(ATTN_TPC_ENV, bad)
        with pytest.raises(ValueError, match=ATTN_TPC_ENV):
            attn_tokens_per_cluster()
