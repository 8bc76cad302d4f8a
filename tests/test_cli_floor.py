"""`edgeprof floor`, `gpus`, `models` and `--version` through the real CLI (subprocesses)."""

from __future__ import annotations

import json

import pytest

from edgeprof import __version__


def test_paper_headline_cell(run_edgeprof) -> None:
    """Qwen2.5-7B, L4, ctx 2048, 62.32 ms measured: the paper's "roughly 81%" cell."""
    out = run_edgeprof("floor", "--model", "qwen2.5-7b", "--gpu", "l4", "--ctx", "2048", "--measured-ms", "62.32",
                       "--json")
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    for key in ("model", "gpu", "ctx", "weights", "weight_bytes", "kv_bytes", "peak_bytes_per_s", "floor_ms",
                "touched_floor_ms", "fraction", "touched_fraction"):
        assert key in rec, key
    assert (rec["model"], rec["gpu"], rec["ctx"], rec["weights"]) == ("qwen2.5-7b", "l4", 2048, "bf16")
    # (15,231,233,024 weight + 117,440,512 KV) B / 300e9 B/s = 51.162 ms; / 62.32 ms = 0.821
    assert rec["weight_bytes"] == 15_231_233_024 and rec["kv_bytes"] == 117_440_512
    assert rec["floor_ms"] == pytest.approx(51.162, abs=0.001)
    assert rec["fraction"] == pytest.approx(0.821, abs=0.001)
    assert rec["touched_fraction"] < rec["fraction"]
    human = run_edgeprof("floor", "--model", "qwen2.5-7b", "--gpu", "l4", "--ctx", "2048", "--measured-ms", "62.32")
    assert human.returncode == 0
    assert "0.821" in human.stdout and "51.162" in human.stdout
    for group in ("attention", "mlp", "norms", "embedding", "lm_head"):
        assert group in human.stdout


def test_ctx_list_gives_a_json_list(run_edgeprof) -> None:
    out = run_edgeprof("floor", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--ctx", "2048,4096,8192,16k",
                       "--weights", "gptq4-g128", "--json")
    assert out.returncode == 0, out.stderr
    recs = json.loads(out.stdout)
    assert [r["ctx"] for r in recs] == [2048, 4096, 8192, 16384]
    assert len({r["weight_bytes"] for r in recs}) == 1  # weights do not depend on ctx
    kv = [r["kv_bytes"] for r in recs]
    assert kv[1] == 2 * kv[0] and kv[3] == 8 * kv[0]  # KV grows linearly with ctx
    assert all(r["weights"] == "gptq4-g128" and r["gpu"] == "h100-sxm" for r in recs)


def test_gpu_by_nvml_name_and_default_device(run_edgeprof) -> None:
    out = run_edgeprof("floor", "--model", "mistral-7b-v0.3", "--gpu", "NVIDIA H100 80GB HBM3", "--json")
    assert json.loads(out.stdout)["gpu"] == "h100-sxm"
    detected = run_edgeprof("floor", "--model", "smollm2-135m", "--json", env={"CUDA_VISIBLE_DEVICES": ""})
    assert json.loads(detected.stdout)["gpu"] == "cpu"


def test_model_from_config_dir(run_edgeprof, tmp_path) -> None:
    cfg = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9,
           "num_hidden_layers": 30, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True,
           "max_position_embeddings": 8192}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    from_dir = json.loads(run_edgeprof("floor", "--model", str(tmp_path), "--gpu", "l4", "--json").stdout)
    preset = json.loads(run_edgeprof("floor", "--model", "smollm2-135m", "--gpu", "l4", "--json").stdout)
    assert from_dir["paper_bytes"] == preset["paper_bytes"]
    assert from_dir["touched_bytes"] == preset["touched_bytes"]


BAD_INPUT = [
    # (args, words the one-line error must contain)
    (["--model", "gpt-9", "--gpu", "l4"], ["'gpt-9'", "qwen2.5-7b", "llama-3.1-8b"]),
    (["--model", "qwen2.5-7b", "--gpu", "tpu-v5"], ["'tpu-v5'", "h100-sxm", "l4"]),
    (["--model", "qwen2.5-7b", "--gpu", "l4", "--weights", "q3_k"], ["'q3_k'", "nf4", "gptq4"]),
    (["--model", "qwen2.5-7b", "--gpu", "l4", "--ctx", "-5"], ["ctx", "-5", "positive"]),
    (["--model", "qwen2.5-7b", "--gpu", "l4", "--ctx", "0"], ["ctx", "positive"]),
    (["--model", "qwen2.5-7b", "--gpu", "l4", "--ctx", "65536"], ["65536", "32768", "maximum"]),
    (["--model", "smollm2-135m", "--gpu", "l4", "--ctx", "2048,16384"], ["16384", "8192"]),
    (["--model", "qwen2.5-7b", "--gpu", "l4", "--ctx", "2k4"], ["'2k4'", "2048"]),
    (["--model", "qwen2.5-7b", "--gpu", "l4", "--measured-ms", "-3"], ["measured-ms", "-3"]),
    (["--model", "qwen2.5-7b", "--gpu", "l4", "--ctx", "1,2", "--measured-ms", "5"], ["measured-ms", "one per ctx"]),
    (["--model", "/no/such/dir", "--gpu", "l4"], ["/no/such/dir"]),
    (["--model", "/no/such/model.gguf", "--gpu", "l4"], ["/no/such/model.gguf"]),
    (["--model", "qwen2.5-7b", "--gpu", "l4", "--bandwidth", "calibrated"], ["calibrate", "l4"]),
]


@pytest.mark.parametrize(("args", "words"), BAD_INPUT, ids=[" ".join(a[2:] or a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_without_traceback(run_edgeprof, tmp_cache, args, words) -> None:
    out = run_edgeprof("floor", *args)
    assert out.returncode != 0
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert lines[0].startswith("edgeprof floor: error:")
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_catalog_commands(run_edgeprof) -> None:
    gpus = json.loads(run_edgeprof("gpus", "--json").stdout)
    assert {g["key"] for g in gpus} >= {"l4", "h100-sxm", "h200", "cpu", "orin-agx-64"}
    assert sum(g["detected"] for g in gpus) == 1
    models = json.loads(run_edgeprof("models", "--json").stdout)
    by_name = {m["name"]: m for m in models}
    assert by_name["qwen2.5-7b"]["bf16_weight_bytes"] == 2 * 7_615_616_512
    table = run_edgeprof("models").stdout
    assert "mistral-7b-v0.3" in table and "smollm2-135m" in table
    assert "H100 80GB HBM3" in run_edgeprof("gpus").stdout


def test_version_and_help(run_edgeprof) -> None:
    out = run_edgeprof("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"edgeprof {__version__}"
    helptext = run_edgeprof("--help").stdout
    for cmd in ("floor", "gpus", "models", "calibrate", "fetch-default"):
        assert cmd in helptext
