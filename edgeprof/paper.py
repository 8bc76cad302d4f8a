"""The seed paper's public figures (configs/paper_figures.yaml), for side-by-side display."""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml

from edgeprof.paths import config_file


@cache
def figures() -> dict[str, Any]:
    path = config_file("paper_figures.yaml")
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text()).get("paper", {})


def cuda_graph_figures() -> dict[str, Any]:
    return dict(figures().get("cuda_graphs", {}))
