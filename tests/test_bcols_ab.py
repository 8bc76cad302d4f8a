"""benchmarks/bcols_ab.py's pure parts: the config list, nvidia-smi's samples and the paired summary."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bcols_ab  # noqa: E402


def test_configs_parse_and_a_bad_entry_is_named():
    assert bcols_ab.parse_configs("down:clscxg:10, o:wk6:1") == [("down", "clscxg", 10), ("o", "wk6", 1)]
    with pytest.raises(ValueError, match="'down:clscxg'"):
        bcols_ab.parse_configs("down:clscxg")
    with pytest.raises(ValueError, match="'down:scx:0'"):
        bcols_ab.parse_configs("down:scx:0")
    with pytest.raises(ValueError, match="at least one"):
        bcols_ab.parse_configs(" , ")


def test_every_model_default_parses():
    for text in bcols_ab.DEFAULT_CONFIGS.values():
        assert bcols_ab.parse_configs(text)


def test_smi_samples_skip_a_line_whose_clock_or_power_does_not_parse():
    text = ("2026/11/29 10:00:00.000, 1980, 650.0\n"
            "2026/11/29 10:00:00.020, 1800, [N/A]\n"  # skipped whole: its clock must not count alone
            "2026/11/29 10:00:00.040, 1900, 600.0\n"
            "garbage\n")
    s = bcols_ab.parse_smi(text)
    assert s == {"samples": 2, "sm_mhz_mean": 1940.0, "sm_mhz_min": 1900.0, "power_w_mean": 625.0,
                 "power_w_max": 650.0}
    assert bcols_ab.parse_smi("") == {"samples": 0}


def test_summary_pairs_each_round_and_needs_equal_rounds():
    s = bcols_ab.summarise({"x": [10.0, 12.0, 11.0], "zero": [9.0, 12.0, 11.0]})
    assert s["us_x"] == 11.0 and s["us_zero"] == 11.0
    assert s["ratio_median"] == 1.0 and s["ratio_min"] == 0.9 and s["ratio_max"] == 1.0 and s["rounds"] == 3
    with pytest.raises(ValueError):
        bcols_ab.summarise({"x": [1.0, 2.0], "zero": [1.0]})
