"""benchmarks/int4_gemv.py --suite tune: its CPU-side parts (options, the table, the best config
per shape). The sweep itself needs an sm_80+ GPU and nvcc; the integrator runs it on the H200."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
int4_gemv = pytest.importorskip("int4_gemv")


def test_tune_options_parse_and_bad_ones_name_the_option(capsys):
    args = int4_gemv.build_parser().parse_args(
        ["--suite", "tune", "--tune-splits", "1,2,8", "--tune-variants", "base,persist", "--tune-shapes",
         "gate_up,down", "--time-budget", "120", "--out-dir", "/tmp/x"])
    assert args.suite == "tune" and args.tune_splits == (1, 2, 8)
    assert args.tune_variants == ("base", "persist") and args.tune_shapes == ("gate_up", "down")
    assert args.time_budget == 120.0
    default = int4_gemv.build_parser().parse_args(["--suite", "tune"])
    from edgeprof.fast.w4cuda import VARIANTS

    assert default.tune_splits == (1, 2, 3, 4, 6, 8) and default.tune_variants == tuple(VARIANTS)
    assert default.tune_shapes == ("qkv", "o", "gate_up", "down")
    with pytest.raises(SystemExit):
        int4_gemv.build_parser().parse_args(["--tune-variants", "base,w16"])
    assert "--tune-variants" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--tune-splits"):
        int4_gemv.build_parser().parse_args(["--tune-splits", "0,2"])
    with pytest.raises(SystemExit, match="--tune-splits"):
        int4_gemv.build_parser().parse_args(["--tune-splits", "two"])


def _row(shape, variant, splits, us, status="ok", default=False, grid_x=0):
    r = {"shape": shape, "k": 3584, "n": 37888, "variant": variant, "splits": splits, "tiles_per_split": 56 // splits, "grid_x": grid_x,
         "ctas": 592 * splits, "default": default, "status": status}
    if status == "ok":
        r.update(us_p50=us, gb_per_s=68e3 / us, frac_copy_bw=68e3 / us / 4221)
    return r


def test_best_per_shape_is_the_fastest_passing_config_against_the_default():
    rows = [_row("gate_up", "base", 1, 28.5, default=True), _row("gate_up", "base", 2, 24.0),
            _row("gate_up", "persist", 1, 20.0, grid_x=264),
            _row("gate_up", "w8", 1, 0, status="FAILED (sym: rel 3.0e-01 fused 3.0e-01 det True unwritten 0)"),
            _row("down", "base", 4, 0, status="SKIPPED (time budget --time-budget spent)")]
    best = int4_gemv.best_per_shape(rows)
    assert best["gate_up"]["best"]["variant"] == "persist" and best["gate_up"]["best"]["grid_x"] == 264
    assert (best["gate_up"]["best"]["k"], best["gate_up"]["best"]["n"]) == (3584, 37888)  # what launch_plan keys on
    assert best["gate_up"]["speedup_vs_default"] == pytest.approx(28.5 / 20.0)
    assert best["down"]["best"] is None


def test_tune_table_marks_default_failed_and_best():
    rows = [_row("gate_up", "base", 1, 28.5, default=True), _row("gate_up", "persist", 1, 20.0, grid_x=264),
            _row("gate_up", "w8", 2, 0, status="FAILED (RuntimeError: boom)")]
    table = int4_gemv.format_tune_table(rows, 4.221e12, "NVIDIA H200")
    lines = table.splitlines()
    assert "NVIDIA H200" in lines[0] and "4.221 TB/s" in lines[0]
    default_line = next(ln for ln in lines if ln.startswith("gate_up  base"))
    assert default_line.endswith("PASS*") and "28.50" in default_line
    failed = next(ln for ln in lines if ln.startswith("gate_up  w8"))
    assert "FAILED (RuntimeError: boom)" in failed and "PASS" not in failed
    best = lines[lines.index(next(ln for ln in lines if ln.startswith("best per shape"))) + 1]
    assert "persist s1 g264" in best and "x1.43" in best


def test_per_shape_rows_carry_a_check_against_their_bound():
    # the bf16 rounding of a right kernel (2e-3 to 4e-3 measured) passes; a wrong one (O(1)) is marked, not hidden
    assert int4_gemv.row_check(3.6e-3) == "PASS"
    assert int4_gemv.row_check(int4_gemv.ROW_BOUND) == "PASS"
    assert int4_gemv.row_check(0.5).startswith("FAIL")


def test_tune_form_defaults_to_plain_and_decoder_times_each_shape_as_the_step_launches_it(capsys):
    assert int4_gemv.build_parser().parse_args(["--suite", "tune"]).tune_form == "plain"
    assert int4_gemv.build_parser().parse_args(["--tune-form", "decoder"]).tune_form == "decoder"
    with pytest.raises(SystemExit):
        int4_gemv.build_parser().parse_args(["--tune-form", "fused"])
    assert "--tune-form" in capsys.readouterr().err
    shapes = [sh[1] for sh in int4_gemv.TUNE_SHAPES]
    assert {int4_gemv.shape_form(s, "plain") for s in shapes} == {"plain"}
    # FastModel.step with the CUDA int4 GEMV: q/k/v and gate_up take the fused norm, down SiLU*up, o its input as is
    assert [int4_gemv.shape_form(s, "decoder") for s in shapes] == ["norm", "plain", "norm", "silu"]


def test_down_is_timed_plain_where_the_plan_runs_gate_up_with_the_act_epilogue(monkeypatch):
    from edgeprof.fast import w4cuda

    k, n = next((k, n) for _, name, k, n in int4_gemv.TUNE_SHAPES if name == "gate_up")
    monkeypatch.setattr(w4cuda, "launch_plan", lambda: {(k, n): {"variant": "scxa", "splits": 1}})
    assert int4_gemv.shape_form("down", "decoder") == "plain"  # gate_up wrote silu(gate) * up
    assert int4_gemv.shape_form("qkv", "decoder") == "norm"
    monkeypatch.setattr(w4cuda, "launch_plan", lambda: {(k, n): {"variant": "scx", "splits": 1}})
    assert int4_gemv.shape_form("down", "decoder") == "silu"


def test_form_call_times_the_method_the_form_names_against_its_own_reference():
    calls = []

    class Lin:
        def __call__(self, x):
            calls.append(("plain", x))
            return "y"

        def fused_silu(self, gu):
            calls.append(("silu", gu))
            return "ys"

        def fused_norm(self, x, res, nw, eps):
            calls.append(("norm", x, res, nw, eps))
            return "yn", "res_out"

    cache = {"x": "x", "gu": "gu", "res": "res", "nw": "nw", "ref": "r", "ref_silu": "rs", "ref_norm": "rn"}
    outs = {form: (int4_gemv.form_call(Lin(), form, cache)[0](), int4_gemv.form_call(Lin(), form, cache)[1])
            for form in ("plain", "silu", "norm")}
    assert outs == {"plain": ("y", "r"), "silu": ("ys", "rs"), "norm": ("yn", "rn")}
    assert calls[-1] == ("norm", "x", "res", "nw", 1e-6)
    # timed under the deferred norm, a launch that defers it is held to the deferred norm's math; one that loops
    # (wk6, or clscx's split-K twin without a cluster) to add_rmsnorm's
    cache["ref_norm_deferred"] = "rd"
    for variant, splits, ref in [("clscx", 7, "rd"), ("clscxg", 10, "rd"), ("scx", 1, "rd"), ("wk6", 1, "rn"),
                                 ("scx", 4, "rn")]:
        lin = Lin()
        lin.variant, lin.splits = variant, splits
        assert int4_gemv.form_call(lin, "norm", cache, "deferred")[1] == ref, (variant, splits)
        assert int4_gemv.form_call(lin, "norm", cache, "loop")[1] == "rn"


def test_form_call_times_an_act_epilogue_gate_up_as_the_decoder_launches_it():
    import torch

    calls = []

    class ActLin:  # a gate_up built as scxa: the decoder calls fused_norm_silu (and act_of on a plain input)
        variant, splits, fuses_norm_silu = "scxa", 1, True

        def __call__(self, x):
            raise AssertionError("the plain launch plus a reorder is not what the decoder runs")

        def fused_norm(self, *a):
            raise AssertionError("the plain launch plus a reorder is not what the decoder runs")

        def act_of(self, x):
            calls.append(("act", x))
            return "ya"

        def fused_norm_silu(self, x, res, nw, eps):
            calls.append(("norm_silu", x, res, nw, eps))
            return "yns", "res_out"

    g = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    u = torch.tensor([[3.0, 0.5]], dtype=torch.float64)
    ref = torch.cat([g, u], dim=-1)
    cache = {"x": "x", "res": "res", "nw": "nw", "ref": ref, "ref_norm": ref, "ref_norm_deferred": 2 * ref}
    silu_u = g / (1 + torch.exp(-g)) * u
    call, r = int4_gemv.form_call(ActLin(), "plain", cache)
    assert call() == "ya" and torch.allclose(r, silu_u)
    call, r = int4_gemv.form_call(ActLin(), "norm", cache, "deferred")
    assert call() == "yns" and torch.allclose(r, int4_gemv._act_ref(2 * ref))
    assert calls == [("act", "x"), ("norm_silu", "x", "res", "nw", 1e-6)]


def test_the_deferred_norm_checks_cover_every_variant_that_takes_it():
    from edgeprof.fast.w4cuda import DEFERRED_NORM_VARIANTS, defers_norm

    launches = int4_gemv.DEFERRED_NORM_LAUNCHES
    assert {v for v, _ in launches} == set(DEFERRED_NORM_VARIANTS)
    assert all(defers_norm(v, s or 1) for v, s in launches)


def test_tune_model_picks_its_four_layer_shapes_and_qwens_are_tune_shapes():
    assert int4_gemv.tune_shapes() == int4_gemv.TUNE_SHAPES
    llama = int4_gemv.tune_shapes("llama-3.1-8b")
    assert [(n, k, o) for _, n, k, o in llama] == [("qkv", 4096, 6144), ("o", 4096, 4096), ("gate_up", 4096, 28672),
                                                    ("down", 14336, 4096)]
    assert int4_gemv.build_parser().parse_args(["--tune-model", "llama-3.1-8b"]).tune_model == "llama-3.1-8b"
    with pytest.raises(SystemExit):
        int4_gemv.build_parser().parse_args(["--tune-model", "mistral-7b"])  # no qkv / o / gate_up / down of its own


def test_down_is_timed_plain_for_a_model_whose_plan_entry_is_missing_only_where_the_rule_says_so(monkeypatch):
    from edgeprof.fast import w4cuda

    monkeypatch.setattr(w4cuda, "launch_plan", lambda: {})
    monkeypatch.setattr(int4_gemv.torch.cuda, "is_available", lambda: False)  # no GPU: no rule, a plain SiLU*up down
    assert int4_gemv.shape_form("down", "decoder", "llama-3.1-8b") == "silu"
    monkeypatch.setattr(int4_gemv.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(w4cuda, "default_launch", lambda k, n, g, dev, role, ext=None: ({"variant": "scxa"}, "rule"))
    assert int4_gemv.shape_form("down", "decoder", "llama-3.1-8b") == "plain"


def test_per_shape_rows_take_the_decoders_launch_with_the_projections_role(monkeypatch):
    from edgeprof.fast import w4cuda

    seen = []

    def fake_default(k, n, g, dev, role, ext=None):
        seen.append(role)
        return ({"variant": "scxa"}, "rule") if role == "gate_up" else ({}, "base")

    monkeypatch.setattr(w4cuda, "launch_plan", lambda: {})
    monkeypatch.setattr(w4cuda, "default_launch", fake_default)
    assert int4_gemv.decoder_launch("gate_up", 4096, 28672) == ({"variant": "scxa"}, "rule")
    assert int4_gemv.decoder_launch("lm_head", 4096, 128256) == ({}, "base")
    assert seen == ["gate_up", None]  # the head has no role: the decoder's head is bf16


def test_the_mlp_pair_runs_a_one_split_variants_entry_as_base_at_choose_splits():
    assert int4_gemv._on_base({}) == {}
    assert int4_gemv._on_base({"variant": "clscxg", "splits": 10}) == {"variant": "base", "splits": 10}
    for variant in ("wk8", "scxa", "sk16"):  # no K splits to keep: base at one split would be another launch
        assert int4_gemv._on_base({"variant": variant, "splits": 1}) == {}


def test_rows_only_refuses_the_options_that_skip_the_rows(capsys):
    assert int4_gemv.build_parser().parse_args(["--suite", "kernel", "--rows-only"]).rows_only
    for other in ("--checks-only", "--steps-only"):
        with pytest.raises(SystemExit):
            int4_gemv.main(["--suite", "kernel", "--rows-only", other])
        assert "--rows-only" in capsys.readouterr().err


def test_the_decoder_checks_run_the_shipped_launches_first_and_miss_none():
    from edgeprof.fast.w4cuda import DECODER_VARIANTS

    order = int4_gemv.decoder_variants_shipped_first()
    assert order[:len(int4_gemv.SHIPPED_FIRST)] == list(int4_gemv.SHIPPED_FIRST)
    assert sorted(order) == sorted(v for v in DECODER_VARIANTS if v != "base")
    assert int4_gemv.build_parser().parse_args(["--checks", "decoder"]).checks == "decoder"
    with pytest.raises(SystemExit):
        int4_gemv.build_parser().parse_args(["--checks", "mlp"])


def test_the_decoder_checks_take_the_norm_their_reference_rounds_as(monkeypatch):
    from edgeprof.fast import w4cuda

    calls = []
    monkeypatch.setattr(w4cuda, "use_norm", lambda norm: calls.append(("norm", norm)))
    monkeypatch.setattr(w4cuda, "use_mma", lambda mma: calls.append(("mma", mma)))
    monkeypatch.setattr(int4_gemv, "decoder_variant_checks", lambda variants: calls.append(("checks", variants)) or [])
    assert int4_gemv.kernel_checks("decoder") == []
    assert calls[0] == ("norm", "loop")  # before any check: the deferred norm rounds otherwise (r159)
    assert calls[1][0] == "checks" and calls[1][1][0] == int4_gemv.SHIPPED_FIRST[0]
