"""edgeprof.report: one self-contained HTML page (no JS, images inline) of a results dir."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import pytest
from analysis_records import make_record

from edgeprof.ab import INTERVENTIONS, ABOptions, aggregate
from edgeprof.errors import ConfigError
from edgeprof.records import append_jsonl
from edgeprof.report import build_report, write_report


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if "src" in a:
            self.srcs.append(a["src"])
        if "href" in a:
            self.hrefs.append(a["href"])

    def handle_data(self, data):
        self.text.append(data)


def _session(i: int, order: list[str], c: float, t: float) -> dict:
    arm = lambda b, ms: {"backend": b, "wall_ms": [ms] * 5, "gpu_ms": None, "median_wall_ms": ms,  # noqa: E731
                         "median_gpu_ms": None, "capture_s": 0.0}
    return {"pid": 100 + i, "order": order, "load_s": 1.0, "model_label": "qwen2.5-7b [SYNTHETIC random weights]",
            "synthetic": True, "gpu": "h100-sxm", "gpu_name": "NVIDIA H100 80GB HBM3", "torch": "2.x",
            "arms": {"hf-static": arm("hf-static", c), "hf-graph": arm("hf-graph", t)}}


@pytest.fixture
def results_dir(tmp_path):
    for backend, weights, base in (("hf-eager", "bf16", 70.0), ("hf-graph", "bf16", 8.0),
                                   ("torchao-int4", "gptq4-g128", 6.0)):
        for ctx in (2048, 4096):
            append_jsonl(tmp_path / "cells.jsonl",
                         make_record(backend=backend, weights=weights, ctx=ctx, samples=[base + ctx / 4096] * 30))
    append_jsonl(tmp_path / "cells.jsonl", make_record(backend="exllamav2", weights="gptq4-g128", status="failed",
                                                       error="out of memory: <tried to allocate> 2 GiB"))
    iv = INTERVENTIONS["cuda-graphs"]
    opts = ABOptions("cuda-graphs", "qwen2.5-7b", 2048, sessions=4)
    outs = [_session(i, ["hf-static", "hf-graph"][:: 1 if i % 2 == 0 else -1], 37.0 + i / 10, 8.2) for i in range(4)]
    (tmp_path / "ab.json").write_text(json.dumps(aggregate(iv, "hf-static", "hf-graph", opts, "cuda", outs)))
    return tmp_path


def test_report_is_self_contained(results_dir) -> None:
    page = build_report(results_dir)
    p = _Collect()
    p.feed(page)
    assert "script" not in p.tags and "<script" not in page.lower()
    assert "link" not in p.tags and not p.hrefs  # no external stylesheet or links needed
    assert p.srcs and all(s.startswith("data:image/png;base64,") for s in p.srcs)
    for s in p.srcs:
        assert base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    text = " ".join(p.text)
    # provenance, percentiles, floors, the failed cell with its reason (escaped), A/B vs the paper
    assert "NVIDIA H100 80GB HBM3 (SXM5)" in text and "SYNTHETIC" in text
    for col in ("p50 ms", "p90 ms", "p99 ms", "max ms", "floor ms (paper)", "floor ms (touched)", "fraction"):
        assert col in text
    assert "out of memory: <tried to allocate> 2 GiB" in text and "&lt;tried" in page
    assert "cuda-graphs" in text and "1.259" in text and "bootstrap" in text
    assert "Seed paper figures" in text
    assert len(p.srcs) == 3  # ms/step, fraction of floor, A/B ratios


@pytest.mark.slow
def test_report_with_real_explain_and_runlog(results_dir, tmp_path) -> None:
    from edgeprof.daemon.runlog import RunLog
    from edgeprof.explain import ExplainOptions, run_explain

    r = run_explain(ExplainOptions(model="tiny-test", backend="hf-static", ctx=32, steps=2, warmup=1, device="cpu"))
    (results_dir / "explain-hf-static.json").write_text(json.dumps(r))
    log = RunLog(tmp_path / "run.sqlite")
    log.start_run({"model": "tiny-test", "backend": "hf-static", "device": "cpu"})
    for i in range(5):
        log.token({"id": "r1", "index": i, "token_id": 1, "text": "x", "latency_ms": 2.0 + i, "gpu_ms": None,
                   "floor_ms": 0.1, "fraction": 0.05, "deadline_missed": False, "position": i}, float(i))
    log.end_run("shutdown")
    log.close()
    out = write_report(results_dir, runlog=tmp_path / "run.sqlite")
    assert out == results_dir / "report.html"
    page = out.read_text()
    assert "Where the time goes" in page and "host gap (idle)" in page and "hf-static" in page
    assert "Run log" in page and "run.sqlite" in page
    assert not list(results_dir.glob(".*.tmp"))  # written atomically


def test_report_errors(tmp_path, run_edgeprof) -> None:
    with pytest.raises(ConfigError, match="no cells.jsonl"):
        build_report(tmp_path)
    proc = run_edgeprof("report", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "not a directory" in proc.stderr and "Traceback" not in proc.stderr


def test_report_names_its_folder_relative_to_the_working_directory(results_dir, monkeypatch) -> None:
    monkeypatch.chdir(results_dir.parent)
    page = build_report(results_dir)
    assert f"<code>{results_dir.name}</code>" in page and str(results_dir.parent) not in page
