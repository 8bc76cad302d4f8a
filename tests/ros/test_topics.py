"""TopicNames: defaults, validation, prefixes."""

from __future__ import annotations

import pytest

from edgeprof.errors import ConfigError
from edgeprof.ros.topics import TopicNames


def test_defaults_are_the_documented_names():
    assert TopicNames().as_dict() == {
        "request": "/edgeprof/request",
        "tokens": "/edgeprof/tokens",
        "next_token": "/edgeprof/next_token",
        "reset": "/edgeprof/reset",
        "status": "/edgeprof/status",
    }


def test_prefix_moves_every_name():
    names = TopicNames.with_prefix("robot1/llm/")
    assert names.request == "/robot1/llm/request" and names.reset == "/robot1/llm/reset"


def test_relative_names_become_absolute():
    assert TopicNames(request="robot/request").request == "/robot/request"


@pytest.mark.parametrize("bad", ["/edgeprof/", "/1abc", "/a b", "", 5, "/a//b", "/x-y"])
def test_bad_name_names_the_field(bad):
    with pytest.raises(ConfigError, match=r"topics\.request"):
        TopicNames(request=bad)


def test_names_must_be_distinct():
    with pytest.raises(ConfigError, match="distinct"):
        TopicNames(tokens="/edgeprof/request")


def test_from_dict_rejects_unknown_keys():
    assert TopicNames.from_dict({"tokens": "/x/tokens"}).tokens == "/x/tokens"
    assert TopicNames.from_dict(None) == TopicNames()
    with pytest.raises(ConfigError, match=r"topics\.token\b.*valid keys"):
        TopicNames.from_dict({"token": "/x"})
