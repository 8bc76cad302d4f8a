"""interfaces/edgeprof_msgs: the typed ROS 2 definitions parse with rosidl and mirror the JSON records."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

rosidl = pytest.importorskip("rosidl_adapter.parser", reason="rosidl_adapter comes with the ROS 2 wheels ('edgeprof[ros]')")

PKG = Path(__file__).resolve().parents[2] / "interfaces" / "edgeprof_msgs"
TOKEN_JSON_FIELDS = ["id", "index", "token_id", "text", "latency_ms", "gpu_ms", "floor_ms", "fraction",
                     "deadline_missed", "position"]
DONE_JSON_FIELDS = ["id", "reason", "n_tokens", "ttft_ms", "p50_ms", "p99_ms", "fraction_median", "deadline_misses"]


def _names(fields):
    return [f.name for f in fields]


def test_token_msg_mirrors_the_token_record():
    msg = rosidl.parse_message_file("edgeprof_msgs", str(PKG / "msg" / "Token.msg"))
    assert _names(msg.fields)[: len(TOKEN_JSON_FIELDS)] == TOKEN_JSON_FIELDS


def test_done_msg_mirrors_the_final_record():
    msg = rosidl.parse_message_file("edgeprof_msgs", str(PKG / "msg" / "Done.msg"))
    assert _names(msg.fields) == DONE_JSON_FIELDS


def test_status_and_services_parse():
    status = rosidl.parse_message_file("edgeprof_msgs", str(PKG / "msg" / "Status.msg"))
    assert {"state", "model", "backend", "gpu", "floor_ms", "position"} <= set(_names(status.fields))
    nxt = rosidl.parse_service_file("edgeprof_msgs", str(PKG / "srv" / "NextToken.srv"))
    token = [f for f in nxt.response.fields if f.name == "token"][0]
    assert (token.type.pkg_name, token.type.type) == ("edgeprof_msgs", "Token")
    rosidl.parse_service_file("edgeprof_msgs", str(PKG / "srv" / "Reset.srv"))


def test_generate_action_streams_token_feedback():
    action = rosidl.parse_action_file("edgeprof_msgs", str(PKG / "action" / "Generate.action"))
    goal = _names(action.goal.fields)
    assert {"prompt", "messages_json", "max_new_tokens", "reset", "deadline_ms"} <= set(goal)
    (feedback,) = action.feedback.fields
    assert (feedback.name, feedback.type.type) == ("token", "Token")
    assert "done" in _names(action.result.fields)


def test_cmake_lists_every_interface_file_and_package_xml_is_valid():
    files = sorted(str(p.relative_to(PKG)) for d in ("msg", "srv", "action") for p in (PKG / d).iterdir())
    cmake = (PKG / "CMakeLists.txt").read_text()
    for f in files:
        assert f'"{f}"' in cmake, f"{f} is not in rosidl_generate_interfaces"
    root = ET.parse(PKG / "package.xml").getroot()
    assert root.findtext("name") == "edgeprof_msgs"
    assert root.findtext("member_of_group") == "rosidl_interface_packages"
