"""edgeprof.backends.registry: the one list of backend facts (packages, versions, weights, options)."""

from __future__ import annotations

import pytest

from edgeprof.backends import registry
from edgeprof.errors import ConfigError


def test_quantising_backends_cannot_share_a_load() -> None:
    assert registry.can_share_model("hf-eager", "hf-graph", "edgeprof-fast")
    for name in ("bnb-nf4", "bnb-int8", "torchao-int4", "exllamav2"):
        assert not registry.can_share_model("hf-eager", name), name


def test_every_backend_with_its_own_package_records_its_version() -> None:
    from edgeprof.bench import versions

    for info in registry.BACKENDS.values():
        extra = [p for p in info.packages if p not in ("torch", "transformers")]
        if extra and not info.unavailable_reason:
            assert info.version_package in extra, info.name
    assert "gemlite" in versions("edgeprof-fast-int4-gemlite")["backend_package"]
    assert versions("hf-eager")["backend_package"] is None


def test_an_unknown_option_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"'use_grpah'.*use_graph, ops"):
        registry.create("edgeprof-fast", None, "cpu", 64, use_grpah=False)
    with pytest.raises(ConfigError, match="its options: none"):
        registry.create("hf-eager", None, "cpu", 64, group=64)
