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
    from importlib import metadata

    from edgeprof.bench import versions

    for info in registry.BACKENDS.values():
        extra = [p for p in info.packages if p not in ("torch", "transformers")]
        if extra and not info.unavailable_reason:
            # the distribution that provides one of its import packages (llama_cpp <- llama_cpp_python)
            installed = {d for p in extra for d in metadata.packages_distributions().get(p, [])}
            if not installed and info.version_package not in extra:
                continue  # not installed here: which distribution provides it can't be checked
            dists = installed | set(extra)
            assert info.version_package in {d.replace("-", "_") for d in dists}, info.name
    assert "gemlite" in versions("edgeprof-fast-int4-gemlite")["backend_package"]
    assert versions("hf-eager")["backend_package"] is None


def test_an_unknown_option_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"'use_grpah'.*use_graph, ops"):
        registry.create("edgeprof-fast", None, "cpu", 64, use_grpah=False)
    with pytest.raises(ConfigError, match="its options: none"):
        registry.create("hf-eager", None, "cpu", 64, group=64)
