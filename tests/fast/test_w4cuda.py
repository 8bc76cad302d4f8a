"""edgeprof's CUDA W4 kernel: the packed layout (pure torch, runs here) and the CPU fallback."""

import pytest
import torch

from edgeprof.fast import w4cuda
from edgeprof.fast.int4 import INT4_KERNELS, quantize_rtn
from edgeprof.fast.w4cuda import choose_splits, pack_w4, supported, to_row_block, to_tile_major, unpack_w4


@pytest.mark.parametrize(("n", "k", "group", "asym"), [(32, 128, 32, True), (48, 256, 128, False),
                                                         (64, 192, 64, True), (16, 512, 128, True)])
def test_pack_unpack_roundtrip_is_exact(n, k, group, asym):
    g = torch.Generator().manual_seed(n + k)
    q, z, s = quantize_rtn(torch.randn(n, k, generator=g), group)
    if asym:
        z = torch.randint(0, 16, z.shape, generator=g, dtype=torch.int32)
    p = pack_w4(q, z, s, group)
    assert p.qw.shape == (n // 16, k // 64, 32, 4) and p.asym == asym
    assert p.sz.shape == (n // 16, k // group, 8, 4 if asym else 2)
    q2, z2, s2 = unpack_w4(p)
    assert torch.equal(q2, q) and torch.equal(z2, z) and torch.equal(s2, s.to(torch.bfloat16).float())


def test_tile_major_layout_puts_tile_t_of_every_row_block_side_by_side():
    """The "tm" variants' layout: qw [K/64, N/16, 32, 4], sz [K/g, N/16, 8, c]; same tiles, same function."""
    g = torch.Generator().manual_seed(3)
    q, _, s = quantize_rtn(torch.randn(48, 256, generator=g), 128)
    z = torch.randint(0, 16, s.shape, generator=g, dtype=torch.int32)
    p = pack_w4(q, z, s, 128)
    tm = to_tile_major(p)
    assert tm.layout == "tile" and tm.qw.shape == (4, 3, 32, 4) and tm.sz.shape == (2, 3, 8, 4)
    assert torch.equal(tm.qw[2, 1], p.qw[1, 2]) and torch.equal(tm.sz[1, 2], p.sz[2, 1])
    assert to_tile_major(tm) is tm and to_row_block(tm).layout == "rowblock"
    for a, b in zip(unpack_w4(tm), unpack_w4(p), strict=True):
        assert torch.equal(a, b)


def test_nibble_p_of_lane_word_is_the_documented_weight():
    """The kernel's contract: word j, nibble p = rh + 2kh + 4e of lane L holds
    q[16nb + L//4 + 8rh, 64t + 16j + 2(L%4) + 8kh + e]."""
    q = torch.randint(0, 16, (32, 128), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    p = pack_w4(q, torch.full((32, 1), 8, dtype=torch.int32), torch.ones(32, 1), 128)
    for nb, t, lane, j in [(0, 0, 0, 0), (1, 1, 31, 3), (0, 1, 13, 2), (1, 0, 6, 1)]:
        word = int(p.qw[nb, t, lane, j]) & 0xFFFFFFFF
        for pos in range(8):
            rh, kh, e = pos & 1, (pos >> 1) & 1, pos >> 2
            row, col = 16 * nb + lane // 4 + 8 * rh, 64 * t + 16 * j + 2 * (lane % 4) + 8 * kh + e
            assert (word >> (4 * pos)) & 0xF == int(q[row, col])


def _f16_regs(word: int) -> list[tuple[float, float]]:
    """csrc dq_word_f16 in Python: the 4 A registers of a packed word as fp16 pairs (low half, high half)."""
    import struct

    def lop3(a: int, mask: int) -> int:  # (a & mask) | 0x64006400
        return (a & mask) | 0x64006400

    w8 = word >> 8
    regs = [lop3(word, 0x000F000F), lop3(word, 0x00F000F0), lop3(w8, 0x000F000F), lop3(w8, 0x00F000F0)]
    return [struct.unpack("<2e", struct.pack("<I", r)) for r in regs]


def test_f16_dequant_and_epilogue_give_the_weights_times_x():
    """The fp16 mma path's algebra (w4a16_gemv.cu: dq_word_f16 and chunk_math's F16 epilogue) on the packed
    layout: even registers (row g) carry 1024 + q, odd ones (row g + 8) 1024 + 16 q, and with the epilogue's
    (1024 + z) and (1024 + 16 z, s / 16) both rows give s * sum(x * (q - z)) exactly."""
    gen = torch.Generator().manual_seed(5)
    q = torch.randint(0, 16, (16, 64), generator=gen, dtype=torch.int32)
    z = torch.randint(0, 16, (16, 1), generator=gen, dtype=torch.int32)
    s = torch.rand(16, 1, generator=gen) + 0.5
    x = torch.randint(-8, 8, (64,), generator=gen).double()  # small integers: every sum below is exact
    p = pack_w4(q, z, s, 64)
    acc = torch.zeros(16, dtype=torch.float64)  # per row: the mma's sum over the tile
    for lane in range(32):
        for j in range(4):
            for r, pair in enumerate(_f16_regs(int(p.qw[0, 0, lane, j]) & 0xFFFFFFFF)):
                rh, kh = r & 1, r >> 1
                row = lane // 4 + 8 * rh
                for e, val in enumerate(pair):
                    col = 16 * j + 2 * (lane % 4) + 8 * kh + e
                    assert val == 1024 + (16 if rh else 1) * int(q[row, col])
                    acc[row] += val * x[col]
    sx = float(x.sum())
    for row in range(16):
        zk, ss = 128 + int(z[row, 0]), float(s.to(torch.bfloat16).float()[row, 0])  # the sz entries: 128 + z, s
        # the kernel's F16 epilogue: row g z0 += 896; row g + 8 z1 = 16 z1 - 1024, s1 *= 1/16
        zf, sf = (zk + 896, ss) if row < 8 else (16 * zk - 1024, ss * 0.0625)
        y = sf * (acc[row] - zf * sx)
        want = ss * float(((q[row].double() - (zk - 128)) * x).sum())
        assert y == pytest.approx(want, rel=1e-12, abs=1e-9)


def test_unsupported_shapes_are_named():
    assert supported(3584, 18944, 128) is None
    assert "group" in supported(64, 128, 16)
    assert "% 16" in supported(40, 128, 128)
    with pytest.raises(ValueError, match="edgeprof W4 kernel"):
        pack_w4(torch.zeros(40, 128, dtype=torch.int32), torch.zeros(40, 1), torch.ones(40, 1), 128)


def test_splits_fill_the_gpu_and_respect_groups():
    for n, k in [(3584, 3584), (3584, 18944), (4608, 3584), (37888, 3584)]:
        splits, tps = choose_splits(n, k, 128, 132)
        assert tps % 2 == 0 and splits * tps >= k // 64 and (splits - 1) * tps < k // 64
        assert -(-(n // 16) // 4) * splits >= 132 * 2  # at least 2 CTAs per SM of 132
        assert tps * 64 <= 20480  # the x slice fits 40 KB of shared memory


def test_cpu_falls_back_to_tinygemm_and_says_why():
    q, z, s = quantize_rtn(torch.randn(64, 256), 128)
    lin = INT4_KERNELS["cuda"](q, z, s.to(torch.bfloat16).float(), 128)
    assert lin.kernel_name == "tinygemm" and lin.fallback_reason
    x = torch.randn(1, 256).to(torch.bfloat16)
    assert lin(x).shape == (1, 64)


def test_int4_cuda_backend_without_a_gpu_runs_tinygemm_and_records_it():
    from edgeprof.backends import registry
    from edgeprof.sources import load_model

    loaded = load_model("tiny-test", "cpu")
    ref = registry.create("edgeprof-fast-int4", loaded, device="cpu", max_ctx=64)
    dec = registry.create("edgeprof-fast-int4-cuda", loaded, device="cpu", max_ctx=64)
    notes = dec.info().notes
    assert dec.info().backend == "edgeprof-fast-int4-cuda"
    assert notes["int4_kernel"] == "tinygemm" and "CUDA" in notes["int4_fallback_reason"]
    assert dec.prefill([1, 2, 3]).token_id == ref.prefill([1, 2, 3]).token_id


# ---------------------------------------------------------------- launch-shape tuning (pure logic)
def test_split_plan_keeps_groups_whole_and_says_when_a_slice_is_too_big():
    from edgeprof.fast.w4cuda import split_plan

    assert split_plan(3584, 128, 8) == (7, 8)  # 56 tiles: 8 splits of 7 would cut a 2-tile group
    assert split_plan(3584, 32, 8) == (8, 7)  # group 32: any tile boundary is a group boundary
    assert split_plan(18944, 128, 1) == (1, 296)
    assert split_plan(18944, 128, 3) == (3, 100)
    with pytest.raises(ValueError, match="splits"):
        split_plan(32768, 128, 1)  # 512 tiles of x do not fit shared memory
    with pytest.raises(ValueError, match="splits"):
        split_plan(3584, 128, 0)


def test_launch_ctas_follows_the_kernel_grid():
    from edgeprof.fast.w4cuda import launch_ctas

    assert launch_ctas(37888, 1) == 592  # 2368 row blocks, 4 per CTA
    assert launch_ctas(37888, 1, "w8") == 296
    assert launch_ctas(37888, 2, "persist", 132) == 264
    assert launch_ctas(37888, 1, "persist", 0) == 592  # grid_x 0: one CTA per column
    assert launch_ctas(3584, 10, "persist", 999) == 560  # grid_x above the columns is clipped
    assert launch_ctas(4608, 1, "k4") == 288  # one row block per CTA: 4 warps on it, each a quarter of K
    assert launch_ctas(3584, 2, "k2") == 224  # 2 row blocks per CTA, 2 K splits


@pytest.mark.parametrize(("n", "k"), [(4608, 3584), (3584, 3584), (37888, 3584), (3584, 18944)])
def test_tune_configs_are_valid_launches_with_one_default(n, k):
    from edgeprof.fast.w4cuda import MAX_SLICE_TILES, launch_ctas, tune_configs

    configs = tune_configs(n, k, 128, 132)
    tiles = k // 64
    assert sum(c["default"] for c in configs) == 1
    default = next(c for c in configs if c["default"])
    assert (default["splits"], default["tiles_per_split"]) == choose_splits(n, k, 128, 132)
    keys = [(c["variant"], c["splits"], c["grid_x"]) for c in configs]
    assert len(keys) == len(set(keys))
    assert {c["variant"] for c in configs} == {"base", "w8", "persist"}
    for c in configs:
        s, tps = c["splits"], c["tiles_per_split"]
        assert tps % 2 == 0 and tps <= MAX_SLICE_TILES and s * tps >= tiles and (s - 1) * tps < tiles
        assert c["ctas"] == launch_ctas(n, s, c["variant"], c["grid_x"])
        if c["variant"] == "persist":
            assert 0 < c["grid_x"] < -(-(n // 16) // 4)  # fewer CTAs than row-block columns
        else:
            assert c["grid_x"] == 0


def test_tune_configs_only_offer_variants_compiled_for_the_group():
    from edgeprof.fast.w4cuda import tune_configs

    configs = tune_configs(3584, 3584, 64, 132, splits=(1, 2))
    assert {c["variant"] for c in configs} == {"base"}
    assert [c["splits"] for c in configs] == sorted({1, 2, choose_splits(3584, 3584, 64, 132)[0]})


def test_w4cuda_linear_rejects_a_variant_not_compiled_for_the_group():
    from edgeprof.fast.w4cuda import W4CudaLinear

    q, z, s = quantize_rtn(torch.randn(32, 128), 64)
    p = pack_w4(q, z, s, 64)
    with pytest.raises(ValueError, match="variant.*group"):
        W4CudaLinear(p, variant="persist")
    with pytest.raises(ValueError, match="variant"):
        W4CudaLinear(p, variant="w16")


def test_cluster_variant_is_tuned_only_where_one_cluster_holds_the_splits():
    from edgeprof.fast.w4cuda import CL_MAX_SPLITS, tune_configs

    configs = tune_configs(3584, 18944, 128, 132, splits=(1, 2, 8, 10, 16, 32), variants=("base", "cl"))
    cl = sorted(c["splits"] for c in configs if c["variant"] == "cl")
    base = sorted(c["splits"] for c in configs if c["variant"] == "base")
    assert cl and all(1 < s <= CL_MAX_SPLITS for s in cl)  # one split is base's launch; 16 CTAs per cluster at most
    assert set(cl) == {s for s in base if 1 < s <= CL_MAX_SPLITS} and max(base) > CL_MAX_SPLITS


@pytest.mark.parametrize("variant", ["cl", "clst"])
def test_w4cuda_linear_names_the_cluster_variants_split_limit_before_building(variant):
    from edgeprof.fast.w4cuda import W4CudaLinear

    q, z, s = quantize_rtn(torch.randn(32, 18944), 128)
    with pytest.raises(ValueError, match=f"splits: variant '{variant}' runs 1 to 16 K splits"):
        W4CudaLinear(pack_w4(q, z, s, 128), variant=variant, splits=20)


def test_a_diagnostic_variant_is_built_only_when_asked_for():
    # nomath is the GEMV without its math (timing only): a plan naming it must fail with a reason, not decode garbage
    from edgeprof.fast.w4cuda import DIAGNOSTIC_VARIANTS, W4CudaLinear

    q, z, s = quantize_rtn(torch.randn(32, 256), 128)
    assert set(DIAGNOSTIC_VARIANTS) <= set(w4cuda.VARIANTS) and not set(DIAGNOSTIC_VARIANTS) & set(w4cuda.DECODER_VARIANTS)
    with pytest.raises(ValueError, match="variant: 'nomath' is a timing diagnostic"):
        W4CudaLinear(pack_w4(q, z, s, 128), variant="nomath")


def test_the_staged_base_variant_is_refused_below_sm90_like_the_cluster_ones():
    # st runs no cluster but needs the bulk copy engine (sm_90+): W4CudaLinear checks it as the cluster variants
    assert "st" in w4cuda.SM90_VARIANTS and "st" not in w4cuda.CLUSTER_VARIANTS
    assert set(w4cuda.CLUSTER_VARIANTS) <= set(w4cuda.SM90_VARIANTS)


def test_launch_plan_reads_a_tune_json_and_names_the_variable_when_it_cannot(tmp_path, monkeypatch):
    from edgeprof.fast.w4cuda import PLAN_ENV, launch_plan

    monkeypatch.delenv(PLAN_ENV, raising=False)
    assert launch_plan() == {}
    tune = tmp_path / "tune.json"
    tune.write_text('{"best": {"down": {"best": {"k": 18944, "n": 3584, "variant": "o8", "splits": 8}}, '
                    '"qkv": {"best": null}}}')
    monkeypatch.setenv(PLAN_ENV, str(tune))
    assert launch_plan() == {(18944, 3584): {"variant": "o8", "splits": 8}}
    tune.write_text("{}")
    with pytest.raises(ValueError, match=PLAN_ENV):
        launch_plan()


@pytest.mark.parametrize(("env", "choices", "default", "wanted", "use", "bad"), [
    ("MMA_ENV", "MMAS", "MMA_DEFAULT", "mma_wanted", "use_mma", "int8"),
    ("NORM_ENV", "NORMS", "NORM_DEFAULT", "norm_wanted", "use_norm", "fast"),
    ("MLP_ENV", "MLP_MODES", "MLP_DEFAULT", "mlp_wanted", None, "1")])
def test_each_kernel_switch_reads_its_variable_and_names_it_when_wrong(monkeypatch, env, choices, default, wanted,
                                                                      use, bad):
    env, choices, default = getattr(w4cuda, env), getattr(w4cuda, choices), getattr(w4cuda, default)
    monkeypatch.delenv(env, raising=False)
    assert getattr(w4cuda, wanted)() == default
    for choice in choices:
        monkeypatch.setenv(env, choice)
        assert getattr(w4cuda, wanted)() == choice
    monkeypatch.setenv(env, bad)
    with pytest.raises(ValueError, match=env):
        getattr(w4cuda, wanted)()
    if use:  # the per-step setter refuses the same value, naming what it is
        with pytest.raises(ValueError, match=use.removeprefix("use_")):
            getattr(w4cuda, use)(bad)


def test_each_norm_mode_turns_on_its_own_kernel_switch_and_no_other():
    class Ext:  # what the extension is told: the binding's two setters, recorded
        def __init__(self):
            self.calls = {}

        def set_norm_batch(self, on):
            self.calls["batched"] = on

        def set_norm_deferred(self, on):
            self.calls["deferred"] = on

    for norm in w4cuda.NORMS:
        ext = Ext()
        w4cuda._set_norm(ext, norm)
        assert ext.calls == {"batched": norm == "batched", "deferred": norm == "deferred"}
    binding = (w4cuda.CSRC / "w4a16_binding.cpp").read_text()
    assert 'm.def("set_norm_batch"' in binding and 'm.def("set_norm_deferred"' in binding
    # the deferred norm needs every split's sum of h^2 where the rows are finished: one split, or a cluster's finish
    # (a split-K launch through global partials would scale its rows by one slice's rstd)
    lat = (w4cuda.CSRC / "w4a16_lat.cu").read_text()
    assert "norm && (splits == 1 || CLU) && norm_deferred_enabled()" in lat


def test_the_deferred_norm_is_taken_at_one_split_or_by_a_cluster():
    assert w4cuda.defers_norm("scx", 1) and w4cuda.defers_norm("scxa", 1) and w4cuda.defers_norm("clscx", 7)
    assert not w4cuda.defers_norm("scx", 4)  # split-K through global partials: one slice's rstd per split
    assert not w4cuda.defers_norm("wk6", 1) and not w4cuda.defers_norm("base", 1)
    assert set(w4cuda.DEFERRED_NORM_VARIANTS) <= set(w4cuda.DECODER_VARIANTS)


def test_a_bitwise_twin_is_a_decoder_variant_of_the_same_kind_as_its_twin():
    # the tune and the kernel suite check each against its twin bitwise: same CTA shape, both launchable by a decoder,
    # both clusters (the gather finish is a cluster's), both taking the deferred norm across their splits
    assert w4cuda.BITWISE_TWINS == {"clscxg": "clscx"}
    for variant, twin in w4cuda.BITWISE_TWINS.items():
        assert w4cuda.VARIANTS[variant][1:] == w4cuda.VARIANTS[twin][1:]
        assert {variant, twin} <= set(w4cuda.DECODER_VARIANTS) & set(w4cuda.CLUSTER_VARIANTS)
        assert w4cuda.defers_norm(variant, 7) and w4cuda.defers_norm(twin, 7)
        assert variant not in w4cuda.BITWISE_BASE_VARIANTS  # the group sums in the staging pass: not base's order
    lat = (w4cuda.CSRC / "w4a16_lat.cu").read_text()
    case = lat[lat.index(f"case {w4cuda.VARIANTS['clscxg'][0]}:"):].split("case ", 2)[1]
    assert "lat_launch_t<1, true, true, true, true>" in case  # KW 1, CLU, SCS, XSUM and GATHER


def test_the_gather_finish_expects_the_bytes_the_other_splits_send():
    # rank 0's mbarrier counts (nsplit - 1) * gather_bytes; each other split sends one 8-byte store per c == 0 lane
    # (8 per warp, so WARPS * 16 floats) and, deferred, one float: a mismatch would trap after 2 s on the GPU
    kern = (w4cuda.CSRC / "w4a16_kernels.cuh").read_text()
    assert "return WARPS * 16 * 4 + (DEFER ? 4 : 0);" in kern
    body = kern[kern.index("__device__ __forceinline__ void finish_rows_gather"):]
    body = body[:body.index("\n}\n")]
    assert body.count("st_async_f32x2(") == 1 and "if (c == 0) edgeprof_gemv::st_async_f32x2" in body
    assert "if (DEFER && threadIdx.x == 0) edgeprof_gemv::st_async_f32(" in body
    assert "(unsigned)(nsplit - 1) * gather_bytes<WARPS, DEFER>()" in kern


def test_every_variant_id_is_one_the_kernel_dispatches():
    # the .cu's entry points and the binding's range check must know every id VARIANTS hands out: the tuning
    # variants in w4a16_tune.cu, the latency variants (the decoders' module has them) in w4a16_lat.cu
    tune = (w4cuda.CSRC / "w4a16_tune.cu").read_text()
    lat = (w4cuda.CSRC / "w4a16_lat.cu").read_text()
    binding = (w4cuda.CSRC / "w4a16_binding.cpp").read_text()
    gemv = (w4cuda.CSRC / "w4a16_gemv.cu").read_text()
    sk = (w4cuda.CSRC / "w4a16_sk.cu").read_text()
    ids = sorted(v[0] for v in w4cuda.VARIANTS.values())
    assert ids == list(range(len(ids)))
    for name, (vid, _, _) in w4cuda.VARIANTS.items():
        if name in w4cuda.SK_VARIANTS:  # stream-K: w4a16_gemv.cu's entry point sends it to w4a16_sk.cu
            assert f"variant == {vid}" in gemv and f"variant == {vid}" in sk, name
        elif name in w4cuda.DECODER_VARIANTS:
            case = lat[lat.index(f"case {vid}:"):].split("case ", 2)[1] if vid else ""  # this case, to the next
            launches = ("return lat_launch_t", "return edgeprof_w4a16_wk_launch", "act_epilogue_launch_t")
            assert vid == 0 or any(f in case for f in launches), name
        else:
            assert f"variant == {vid} && group == 128" in tune, name
    assert f"variant <= {ids[-1]})" in binding
    assert w4cuda.DECODER_VARIANTS[0] == "base" and set(w4cuda.DECODER_VARIANTS) <= set(w4cuda.VARIANTS)


def test_the_wk_variants_are_the_ones_the_wk_unit_launches():
    # w4a16_wk.cu's id -> warps map and lat.cu's dispatch must cover exactly WK_VARIANTS, each named by its warps
    import re

    wk = (w4cuda.CSRC / "w4a16_wk.cu").read_text()
    body = wk[wk.index("int edgeprof_w4a16_wk_warps"):]
    warps = {int(v): int(w) for v, w in re.findall(r"variant == (\d+) \? (\d+)", body)}
    assert {w4cuda.VARIANTS[name][0]: int(name[2:]) for name in w4cuda.WK_VARIANTS} == warps
    assert set(w4cuda.WK_VARIANTS) <= set(w4cuda.DECODER_VARIANTS)
    assert all(f"case {w}: return wk_launch_w<{w}>" in wk for w in warps.values())


def test_wk_variants_run_one_split_and_say_so_before_building():
    assert w4cuda.wk_plan(18944, None, "wk8") == (1, 296)
    assert w4cuda.wk_plan(18944, 1, "wk8") == (1, 296)
    with pytest.raises(ValueError, match="splits: variant 'wk8' runs one K split"):
        w4cuda.wk_plan(18944, 10, "wk8")
    from edgeprof.fast.w4cuda import W4CudaLinear

    q, z, s = quantize_rtn(torch.randn(32, 256), 128)
    with pytest.raises(ValueError, match="splits: variant 'wk4' runs one K split"):
        W4CudaLinear(pack_w4(q, z, s, 128), variant="wk4", splits=2)


def test_tune_configs_time_a_wk_variant_at_its_one_split_only():
    from edgeprof.fast.w4cuda import tune_configs

    configs = tune_configs(3584, 18944, 128, 132, splits=(1, 8, 10), variants=("clscx", "wk8"))
    wk = [c for c in configs if c["variant"] == "wk8"]
    assert [(c["splits"], c["tiles_per_split"], c["ctas"]) for c in wk] == [(1, 296, 224)]
    assert sorted(c["splits"] for c in configs if c["variant"] == "clscx") == [8, 10]


def _row_block_owners(n: int, k: int, ctas: int, variant: str) -> dict[int, set[int]]:
    ng = k // 128
    owners: dict[int, set[int]] = {}
    for i, (lo, hi) in enumerate(w4cuda.sk_ranges(n, k, 128, ctas, variant)):
        for nb in range(lo // ng, (hi - 1) // ng + 1):
            owners.setdefault(nb, set()).add(i)
    return owners


@pytest.mark.parametrize("variant", sorted(w4cuda.SK_VARIANTS))
def test_sk_ranges_cover_the_units_in_equal_whole_chunks(variant):
    n, k, ctas = 3584, 18944, 132  # Qwen2.5-7B's down on an H200
    ranges = w4cuda.sk_ranges(n, k, 128, ctas, variant)
    chunk_groups = w4cuda.SK_VARIANTS[variant][1] // 2
    assert ranges[0][0] == 0 and ranges[-1][1] == (n // 16) * (k // 128)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert all(lo % chunk_groups == 0 and hi % chunk_groups == 0 for lo, hi in ranges)
    lengths = {hi - lo for lo, hi in ranges}
    assert max(lengths) - min(lengths) <= chunk_groups  # equal up to one chunk
    # 224 x 148 units over 132 CTAs: ~251 groups each, longer than a row block (148)
    assert min(lengths) >= k // 128


@pytest.mark.parametrize("n, k, ctas, fits", [
    (3584, 18944, 132, True),    # Qwen down: every row block cut between at most two CTAs
    (4096, 14336, 132, True),    # Llama-3.1-8B down
    (4096, 14336, 114, True),    # an H100 PCIe's SM count
    (512, 18944, 132, False),    # 32 row blocks over 132 CTAs: a range shorter than a row block
    (37888, 3584, 132, False),   # gate_up: ~18 row blocks per range, above SK_ROW_BLOCKS_MAX
    (3584, 18944 + 64, 132, False),  # K not a whole number of groups
])
def test_sk_fits_only_where_a_row_block_meets_at_most_two_ctas(n, k, ctas, fits):
    for variant in w4cuda.SK_VARIANTS:
        assert w4cuda.sk_fits(n, k, 128, ctas, variant) is fits
        if fits:
            owners = _row_block_owners(n, k, ctas, variant)
            assert len(owners) == n // 16 and max(len(v) for v in owners.values()) == 2
            assert all(max(v) - min(v) <= 1 for v in owners.values())  # neighbours: i holds the head, i + 1 the tail
            per_cta = {}
            for cs in owners.values():
                for c in cs:
                    per_cta[c] = per_cta.get(c, 0) + 1
            assert max(per_cta.values()) <= w4cuda.SK_ROW_BLOCKS_MAX


def test_tune_configs_time_a_stream_k_variant_at_one_cta_per_sm_where_it_fits():
    from edgeprof.fast.w4cuda import tune_configs

    down = tune_configs(3584, 18944, 128, 132, splits=(10,), variants=("sk16", "sk16n"))
    assert [(c["variant"], c["splits"], c["grid_x"], c["ctas"]) for c in down] == [("sk16", 1, 132, 132),
                                                                                   ("sk16n", 1, 132, 132)]
    assert tune_configs(37888, 3584, 128, 132, splits=(1,), variants=("sk16",)) == []  # gate_up does not fit


def test_sk_variants_run_one_split_and_say_so_before_building():
    from edgeprof.fast.w4cuda import W4CudaLinear

    q, z, s = quantize_rtn(torch.randn(32, 256), 128)
    with pytest.raises(ValueError, match="splits: variant 'sk16' runs one K split"):
        W4CudaLinear(pack_w4(q, z, s, 128), variant="sk16", splits=4)


def test_binding_counts_tickets_per_row_blocks_per_cta_as_variants_says():
    # counters hold one split-K ticket per CTA column; the binding's check and W4CudaLinear's allocation must
    # agree on the row blocks per CTA of every variant (VARIANTS[name][1])
    import re

    binding = (w4cuda.CSRC / "w4a16_binding.cpp").read_text()
    body = binding[binding.index("static int64_t row_blocks_per_cta"):binding.index("static void check_tickets")]
    rb_of = {}
    for cond, rb in re.findall(r"if \(([^)]*)\) return (\d+);", body):
        for vid in re.findall(r"variant == (\d+)", cond):
            rb_of[int(vid)] = int(rb)
    default = int(re.search(r"return (\d+);\s*}\s*$", body).group(1))
    for name, (vid, rb, _) in w4cuda.VARIANTS.items():
        assert rb_of.get(vid, default) == rb, name


def _layer(n: int, k: int, group: int = 128, asym: bool = False, splits: int = 1, variant_id: int = 0,
           bias: int = 0):
    """The launch facts of a W4CudaLinear that mlp_unfusable reads (the layer itself needs a GPU to build)."""
    from types import SimpleNamespace

    p = SimpleNamespace(n=n, k=k, group=group, asym=asym)
    decoder_ids = {w4cuda.VARIANTS[v][0] for v in w4cuda.DECODER_VARIANTS}
    return SimpleNamespace(p=p, fuses_norm=variant_id in decoder_ids, variant_id=variant_id, grid_x=0, splits=splits,
                           bias=torch.empty(bias))


def test_mlp_unfusable_accepts_a_decoder_mlp_and_names_each_obstacle():
    h, i = 3584, 18944
    assert w4cuda.mlp_unfusable(_layer(2 * i, h), _layer(h, i, splits=8)) is None
    assert w4cuda.mlp_unfusable(_layer(2 * i, h, splits=2), _layer(h, i)) is None  # the launch runs gate_up unsplit
    k4 = w4cuda.VARIANTS["k4"][0]
    for gu, dn in [(_layer(2 * i, h, variant_id=2), _layer(h, i)),  # persist: no fused norm
                   (_layer(2 * i, h, variant_id=k4), _layer(h, i)),  # fuses the norm, but not the default launch
                   (_layer(2 * i, h), _layer(h, i, variant_id=k4))]:
        assert "tuning or latency variant" in w4cuda.mlp_unfusable(gu, dn)
    cases = {"shapes": (_layer(2 * i, h), _layer(h, i + 64)),
             "group size": (_layer(2 * i, h, group=64), _layer(h, i)),
             "multiple of 64": (_layer(2 * 18976, h), _layer(h, 18976)),
             "bias": (_layer(2 * i, h, bias=2 * i), _layer(h, i))}
    for words, (gu, dn) in cases.items():
        assert words in w4cuda.mlp_unfusable(gu, dn), words


def test_the_fused_mlp_entry_point_is_bound_and_checked():
    # the .cu's launcher, the binding's declaration and its Python name must agree (no GPU needed to read them)
    src = (w4cuda.CSRC / "w4a16_gemv.cu").read_text()
    binding = (w4cuda.CSRC / "w4a16_binding.cpp").read_text()
    assert "int edgeprof_w4a16_mlp_launch(" in src and "int edgeprof_w4a16_mlp_launch(" in binding
    assert 'm.def("mlp", &mlp' in binding
    assert "I % 64 == 0" in binding


def test_the_act_epilogue_packs_each_ctas_gate_rows_beside_the_same_up_rows():
    # CTA j's 4 row blocks (64 rows) must be gate rows 32j.. and up rows 32j.. of gate_up [2I, H]: finish_act writes
    # silu(gate) * up for MLP inputs 32j .. 32j + 31 from them
    n = 256  # I = 128: 8 gate row blocks, then 8 up row blocks
    order = w4cuda.act_epilogue_order(n)
    assert sorted(order.tolist()) == list(range(n // 16))
    for j in range(n // 64):
        gate, up = order[4 * j:4 * j + 2].tolist(), order[4 * j + 2:4 * j + 4].tolist()
        assert gate == [2 * j, 2 * j + 1] and up == [n // 32 + 2 * j, n // 32 + 2 * j + 1]
    with pytest.raises(ValueError, match="multiple of 64"):
        w4cuda.act_epilogue_order(96)


def test_the_act_epilogue_packing_keeps_every_row_and_puts_it_back():
    q, z, s = quantize_rtn(torch.randn(128, 256), 128)
    packed, rows, unperm = w4cuda.W4CudaLinear._act_epilogue_pack(pack_w4(q, z, s, 128))
    q2, z2, s2 = unpack_w4(packed)
    assert torch.equal(q2[unperm], q) and torch.equal(z2[unperm], z) and torch.equal(s2[unperm], s)
    assert torch.equal(q2, q[rows]) and not torch.equal(rows, torch.arange(128))


def test_a_bias_attached_after_the_build_lands_on_its_rows_in_the_act_epilogue_order():
    # weights._int4_biased and the kernel checks set .bias after the build; r88's checks of scxa's biased forms
    # failed while the field took it in the original order. The prefill path (M > 1) runs here without a GPU.
    from edgeprof.quant.rtn import dequantize_qzs

    q, z, s = quantize_rtn(torch.randn(128, 256), 128)
    no_gpu = object()  # the extension: the prefill path does not call it
    lin = w4cuda.W4CudaLinear(pack_w4(q, z, s, 128), variant="scxa", ext=no_gpu)
    bias = torch.arange(128.0)
    lin.bias = bias
    x = torch.randn(2, 256).to(torch.bfloat16)
    ref = x @ dequantize_qzs(q, z, s, 128).to(torch.bfloat16).t() + bias.to(torch.bfloat16)
    assert torch.equal(lin(x), ref)
    with pytest.raises(ValueError, match=r"bias: shape \(64,\), expected \(128,\)"):
        lin.bias = torch.zeros(64)


def test_act_epilogue_variants_run_one_split_and_are_not_tuned_per_shape():
    from edgeprof.fast.w4cuda import W4CudaLinear, tune_configs

    assert set(w4cuda.ACT_EPILOGUE_VARIANTS) <= set(w4cuda.DECODER_VARIANTS)
    assert all(base in w4cuda.VARIANTS for base in w4cuda.ACT_EPILOGUE_VARIANTS.values())
    q, z, s = quantize_rtn(torch.randn(64, 256), 128)
    with pytest.raises(ValueError, match="splits: variant 'scxa' runs one K split"):
        W4CudaLinear(pack_w4(q, z, s, 128), variant="scxa", splits=2)
    q, z, s = quantize_rtn(torch.randn(32, 256), 128)
    with pytest.raises(ValueError, match="multiple of 64"):
        W4CudaLinear(pack_w4(q, z, s, 128), variant="scxa")
    # its output is silu(gate) * up, not y = W x: the per-shape tune cannot time it as a GEMV (the step A/B does)
    assert not [c for c in tune_configs(37888, 3584, 128, 132, (1,), ("scx", "scxa")) if c["variant"] == "scxa"]


def test_finish_acts_indices_pair_each_gate_row_with_its_up_row():
    # csrc finish_act: CTA bx, warp w, lane row gq hold packed rows 64 bx + 16 w + gq (+ 8) in gu[16 w + gq (+ 8)];
    # thread t < 32 writes y[32 bx + t] from gu[t] (gate) and gu[32 + t] (up). With act_epilogue_order's packing those
    # must be original rows 32 bx + t and I + 32 bx + t of gate_up [2I, H].
    n = 512
    blocks = w4cuda.act_epilogue_order(n)
    packed_to_orig = (blocks[:, None] * 16 + torch.arange(16)).reshape(-1)
    for bx in range(n // 64):
        gu = [None] * 64
        for w in range(4):
            for gq in range(8):
                for r in (16 * w + gq, 16 * w + gq + 8):
                    gu[r] = int(packed_to_orig[64 * bx + r])
        for t in range(32):
            assert (gu[t], gu[32 + t]) == (32 * bx + t, n // 2 + 32 * bx + t)


def test_the_record_names_the_projections_whose_norm_is_deferred():
    from types import SimpleNamespace as NS

    from edgeprof.fast.weights import deferred_norm_projections

    def launch(variant, splits):
        return NS(variant=variant, splits=splits)

    h200 = NS(qkv=launch("clscx", 7), gate_up=NS(lin=launch("scxa", 1)))  # a bias wrapper holds the layer as .lin
    assert deferred_norm_projections(h200) == ["qkv", "gate_up"]
    no_plan = NS(qkv=launch("base", 4), gate_up=launch("base", 1))  # no card plan: the default launch loops
    assert deferred_norm_projections(no_plan) == []
    tinygemm = NS(qkv=NS(), gate_up=NS())  # not edgeprof's CUDA kernel
    assert deferred_norm_projections(tinygemm) == []


def test_rule_launch_gives_the_h200_plan_for_the_shapes_it_was_measured_on():
    """The rule is the H200 plan written as rules: on that card's SM count and arch it must reproduce the plan for
    Qwen2.5-7B (data/gemv_plans.yaml), or the plan and the rule have drifted apart."""
    from edgeprof.fast.plans import card_entries

    roles = {(3584, 4608): "qkv", (3584, 3584): "o", (3584, 37888): "gate_up", (18944, 3584): "down"}
    plan = {(e["k"], e["n"]): e for e in card_entries("NVIDIA H200", "w4a16")}
    # the plan's other entries are the tuned exceptions to the rule (Llama-3.1-8B's down as wk8, rule r132)
    assert set(roles) <= set(plan) and set(plan) - set(roles) == {(14336, 4096)}
    assert w4cuda.rule_launch(14336, 4096, 128, 132, (9, 0), "down") != {"variant": "wk8"}
    for (k, n), role in roles.items():
        got = w4cuda.rule_launch(k, n, 128, 132, (9, 0), role)
        assert got["variant"] == plan[(k, n)]["variant"], role
        assert got.get("splits", 1) == plan[(k, n)]["splits"], role


@pytest.mark.parametrize(("k", "n", "sms", "cc", "role", "want"), [
    (4096, 28672, 132, (9, 0), "gate_up", {"variant": "scxa"}),  # Llama-3.1-8B: scxa though choose_splits says 2
    (4096, 4096, 132, (9, 0), "o", {"variant": "wk6"}),  # 256 row blocks: 1-2 CTAs per SM, one wave
    (4096, 4096, 114, (9, 0), "o", {"variant": "clscxg", "splits": 8}),  # 256 > 2 x 114: two waves, so split-K
    (4096, 4096, 132, (9, 0), None, {"variant": "clscxg", "splits": 8}),  # wk6 only for a plain o (no fused norm)
    (14336, 4096, 132, (9, 0), "down", {"variant": "clscxg", "splits": 9}),
    (18944, 3584, 58, (8, 9), "down", {"variant": "scx", "splits": 5}),  # an L4: no clusters before sm_90
    (3584, 3584, 58, (8, 9), "o", {"variant": "scx", "splits": 5}),  # 224 row blocks > 2 x 58 SMs
    (3584, 37888, 58, (8, 9), "gate_up", {"variant": "scxa"}),
    (3584, 152064, 132, (9, 0), None, {"variant": "scx", "splits": 1}),  # an lm_head-sized shape: one split
    (2048, 1024, 132, (9, 0), "gate_up", {"variant": "clscxg", "splits": 8}),  # 16 CTAs: split K (>= 4 tiles each)
    (3584, 4608, 132, (9, 0), "qkv", {"variant": "clscxg", "splits": 7}),
])
def test_rule_launch_per_shape_role_and_card(k, n, sms, cc, role, want):
    assert w4cuda.rule_launch(k, n, 128, sms, cc, role) == want


def test_rule_launch_leaves_other_group_sizes_to_base():
    assert w4cuda.rule_launch(3584, 4608, 64, 132, (9, 0), "qkv") == {}
    assert w4cuda.rule_launch(3584, 4608, 32, 58, (8, 9), "gate_up") == {}


def test_default_launch_names_its_variable_and_base_or_a_cpu_tensor_take_the_old_launch(monkeypatch):
    monkeypatch.setenv(w4cuda.DEFAULT_ENV, "fastest")
    with pytest.raises(ValueError, match="EDGEPROF_W4_DEFAULT: 'fastest' is not one of rule, rule-sm80, base"):
        w4cuda.default_wanted()
    monkeypatch.setenv(w4cuda.DEFAULT_ENV, "base")
    assert w4cuda.default_launch(3584, 4608, 128, torch.device("cuda"), "qkv") == ({}, "base")
    monkeypatch.delenv(w4cuda.DEFAULT_ENV)
    assert w4cuda.default_wanted() == "rule"
    assert w4cuda.default_launch(3584, 4608, 128, torch.device("cpu"), "qkv") == ({}, "base")


def test_plan_none_ignores_the_shipped_plan(monkeypatch):
    monkeypatch.setenv(w4cuda.PLAN_ENV, "none")
    assert w4cuda.launch_plan() == {}


def test_every_builder_takes_the_role_keyword():
    """weights._int4 passes role= to whichever builder the backend names (one signature for the registry)."""
    import inspect

    for name, build in INT4_KERNELS.items():
        assert "role" in inspect.signature(build).parameters, name


def test_one_wave_splits_steps_down_once_then_gives_up():
    fit = {9: False, 8: True, 7: True}  # Llama-3.1-8B's down on an H200 (r127: 60 clusters of 9 at once, 77 of 8)
    assert w4cuda.one_wave_splits(9, fit.get) == 8
    assert w4cuda.one_wave_splits(8, fit.get) == 8
    assert w4cuda.one_wave_splits(10, lambda s: s <= 8) is None  # two fewer is not tried: scx at 10
    assert w4cuda.one_wave_splits(2, lambda s: False) is None
    assert w4cuda.one_wave_splits(2, lambda s: s == 1) is None  # never a one-split "cluster"


def test_default_launch_on_a_faked_h200(monkeypatch):
    """default_launch's own logic (the GPU's facts faked): the rule, its cluster fit, rule-sm80 and group 64."""
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda dev: SimpleNamespace(major=9, minor=0, multi_processor_count=132))
    fit = {9: 60, 8: 77, 6: 101}  # clusters at once for Llama's down / q/k/v on an H200 (r127)
    monkeypatch.setattr(w4cuda, "cluster_waves", lambda n, s, tps, norm=False, ext=None:
                        {"cluster_waves": 1 if n // 64 <= fit.get(s, 0) else 2})
    monkeypatch.delenv(w4cuda.DEFAULT_ENV, raising=False)
    dev = torch.device("cuda")
    assert w4cuda.default_launch(14336, 4096, 128, dev, "down") == ({"variant": "clscxg", "splits": 8}, "rule")
    assert w4cuda.default_launch(4096, 6144, 128, dev, "qkv") == ({"variant": "clscxg", "splits": 6}, "rule")
    assert w4cuda.default_launch(4096, 6144, 64, dev, "qkv") == ({}, "base")
    monkeypatch.setenv(w4cuda.DEFAULT_ENV, "rule-sm80")
    assert w4cuda.default_launch(14336, 4096, 128, dev, "down") == ({"variant": "scx", "splits": 9}, "rule-sm80")


def test_a_wk_down_from_the_plan_stands_only_behind_a_gate_up_that_writes_silu_times_up(monkeypatch):
    """Llama's down is wk8 in the H200 plan; behind a gate_up without the act epilogue each wk CTA would compute
    SiLU*up over all of K, so plan_launch gives down the default launch then (the shapes: down [4096, 14336])."""
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda dev: SimpleNamespace(major=9, minor=0, multi_processor_count=132))
    monkeypatch.setattr(w4cuda, "cluster_waves", lambda n, s, tps, norm=False, ext=None: {"cluster_waves": 1})
    plan = {(14336, 4096): {"variant": "wk8", "splits": 1}}
    monkeypatch.setattr(w4cuda, "launch_plan", lambda: plan)
    monkeypatch.delenv(w4cuda.DEFAULT_ENV, raising=False)
    dev = torch.device("cuda")
    assert w4cuda.gate_up_writes_act(14336, 4096, 128, dev)  # the rule gives Llama's gate_up scxa
    assert w4cuda.plan_launch(14336, 4096, 128, dev, "down") == ({"variant": "wk8", "splits": 1}, "plan")
    monkeypatch.setenv(w4cuda.DEFAULT_ENV, "base")  # gate_up then runs base: no act epilogue
    assert not w4cuda.gate_up_writes_act(14336, 4096, 128, dev)
    assert w4cuda.plan_launch(14336, 4096, 128, dev, "down") == ({}, "base")
    plan[(4096, 28672)] = {"variant": "scx", "splits": 1}  # a plan whose gate_up is plain
    monkeypatch.delenv(w4cuda.DEFAULT_ENV)
    assert w4cuda.plan_launch(14336, 4096, 128, dev, "down") == ({"variant": "clscxg", "splits": 9}, "rule")
    assert w4cuda.plan_launch(4096, 28672, 128, dev, "gate_up") == ({"variant": "scx", "splits": 1}, "plan")


def test_a_failed_build_is_recorded_by_its_compiler_error_not_ninjas_last_words():
    log = ("Error building extension 'edgeprof_gemv_1234':\n[1/8] /usr/local/cuda/bin/nvcc ... -c w4a16_binding.cpp\n"
           "FAILED: attn_decode.cuda.o\n"
           "/x/csrc/attn_decode.cu(259): error: namespace \"cooperative_groups\" has no member \"cluster_group\"\n"
           "/x/csrc/attn_decode.cu(60): warning #177-D: function \"mma_q\" was declared but never referenced\n"
           "1 error detected in the compilation of \"/x/csrc/attn_decode.cu\".\n"
           "ninja: build stopped: subcommand failed.\n")
    reason = w4cuda.build_failure(RuntimeError(log))
    assert reason.startswith("build failed: RuntimeError: ")
    assert 'attn_decode.cu(259): error: namespace "cooperative_groups" has no member "cluster_group"' in reason
    assert "ninja" not in reason and "warning" not in reason
    # no line names an error (e.g. a missing compiler): the message's tail, bounded
    reason = w4cuda.build_failure(OSError("x" * 1000 + " nvcc: not found"), limit=50)
    assert reason.endswith("nvcc: not found") and len(reason) < 100
