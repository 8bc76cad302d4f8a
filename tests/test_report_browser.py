"""The HTML report in a real browser (Debian chromium driven by playwright): every figure loads,
the console stays clean, and the backend table shows each cell's kernel correctness and quality."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from analysis_records import make_record

from edgeprof.records import append_jsonl
from edgeprof.report import write_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install chromium; "
                                                               "scripts/setup.sh does it when root)"),
]


def _kc(passed: bool, value: float) -> dict:
    return {"passed": passed, "metric": "max rel logit error", "value": value, "bound": 0.1,
            "bound_reason": "weight-only kernel vs its own dequantized weights", "positions": [2040, 2047]}


@pytest.fixture
def report(tmp_path: Path) -> Path:
    q = {"agreement": 0.912, "perplexity": 11.37, "reference_perplexity": 10.5, "model": "smollm2-135m"}
    for backend, weights, ms, kc in (("hf-graph", "bf16", 8.0, _kc(True, 0.02)),
                                     ("torchao-int4", "rtn4-g128", 6.0, _kc(True, 0.03)),
                                     ("broken-int4", "rtn4-g128", 5.0, _kc(False, 0.83))):
        for ctx in (2048, 4096):
            append_jsonl(tmp_path / "cells.jsonl", make_record(
                backend=backend, weights=weights, ctx=ctx, samples=[ms] * 30, kernel_correctness=kc, quality=q,
                steady_state_mem_bytes=int(6e9)))
    return write_report(tmp_path)


def test_report_in_chromium(report: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.as_uri(), wait_until="load")
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])")
            table = page.evaluate("""() => {
                const t = Array.from(document.querySelectorAll('table')).find(
                    t => Array.from(t.querySelectorAll('th')).some(h => h.textContent.trim() === 'kernel correctness'));
                if (!t) return null;
                return {headers: Array.from(t.querySelectorAll('th')).map(h => h.textContent.trim()),
                        rows: Array.from(t.querySelectorAll('tbody tr, tr')).filter(r => r.querySelector('td'))
                              .map(r => [r.className, Array.from(r.cells).map(c => c.textContent.trim())])};
            }""")
        finally:
            browser.close()
    assert images, "the report has no figures"
    assert all(complete and width > 0 for _, complete, width in images), images
    assert not errors, errors
    assert table is not None, "no backend table with a kernel correctness column"
    headers = table["headers"]
    assert "quality" in headers
    col_k, col_q = headers.index("kernel correctness"), headers.index("quality")
    cells = {tuple(c[:5]): (cls, c) for cls, c in table["rows"]}.values()  # a row may match both selectors
    assert len(cells) == 6
    for cls, c in cells:
        assert "agreement 0.912" in c[col_q] and "ppl 11.37" in c[col_q]
        if c[1] == "broken-int4":
            assert c[col_k].startswith("FAIL") and "0.83 > 0.1" in c[col_k] and cls == "failed"
        else:
            assert c[col_k].startswith("pass") and "positions 2040..2047" in c[col_k]
