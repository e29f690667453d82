"""The membership benchmark (benchmarks/membership.py): one tiny run of its command line over UDP.

No timing is asserted: only that each kind of trial ran against real member processes and produced the
figures the report needs (an add and a remove committed, a leader killed mid-add and replaced).
"""

from __future__ import annotations

import json

from benchmarks.membership import main


def test_a_tiny_run_measures_an_add_a_remove_and_a_failover_during_a_pending_add(tmp_path, capsys):
    out = tmp_path / "membership.json"
    assert main(["--transport", "udp", "--nodes", "3", "--trials", "1", "--failovers", "1", "--quiet",
                 "--json", str(out)]) == 0
    document = json.loads(out.read_text())
    (result,) = document["results"]
    assert result["transport"] == "udp" and result["nodes"] == 3
    assert "reads is_leader every 1 ms" in result["application"]
    (added,) = result["adds"]
    (removed,) = result["removes"]
    assert added["ok"] and added["op"] == "add" and added["index"] is not None and added["seconds"] > 0
    assert removed["ok"] and removed["op"] == "remove" and removed["node"] == added["node"]
    assert removed["index"] > added["index"]
    (failover,) = result["failovers"]
    assert failover["seconds"] > 0 and failover["change"]["op"] == "add"
    assert failover["change"]["node"] not in (added["node"],)  # every trial has a fresh member
    summaries = result["summaries"]
    assert summaries["add"]["count"] == 1 and summaries["failover"]["count"] == 1
    table = capsys.readouterr().out
    assert "| udp |" in table and "failover mid-add" in table
