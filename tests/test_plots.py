"""Plot styling that must hold across figures (rendering itself is exercised by the sweep and report tests)."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from edgeprof.backends.registry import names  # noqa: E402
from edgeprof.plots import backend_style  # noqa: E402


def test_a_backend_looks_the_same_everywhere_and_registered_ones_differ():
    assert backend_style("edgeprof-fast") == backend_style("edgeprof-fast")
    styles = [backend_style(n) for n in names()]
    assert len(set(styles)) == len(styles)  # colour + marker pairs are unique within the registry
    assert backend_style("not-a-backend") == backend_style("not-a-backend")
