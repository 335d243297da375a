"""`python -m benchmarks`: a partial run keeps the other suites' figures; a failure is named."""

from __future__ import annotations

import json

import benchmarks.__main__ as runner


def figure(name: str, ours: float) -> dict:
    return {
        "name": name,
        "unit": "msg/s",
        "ours": ours,
        "peer_name": "peer",
        "peer": 10.0,
        "goal": "informational",
        "higher_is_better": True,
        "ratio": ours / 10.0,
    }


def test_partial_run_replaces_its_suites_and_keeps_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "HERE", tmp_path)
    answers = {"decode": ([figure("decode fast", 50.0)], None), "replay": ([], "boom: failed")}
    monkeypatch.setattr(runner, "run_suite", lambda name: answers[name])
    (tmp_path / "results.json").write_text(
        json.dumps(
            {
                "meta": {},
                "sections": [
                    {
                        "suite": "decode",
                        "when": "old",
                        "figures": [figure("decode old", 1.0)],
                        "error": None,
                    },
                    {
                        "suite": "book",
                        "when": "yesterday",
                        "figures": [figure("book", 20.0)],
                        "error": None,
                    },
                ],
            }
        )
    )

    assert runner.main(["decode", "replay"]) == 1

    sections = json.loads((tmp_path / "results.json").read_text())["sections"]
    assert [s["suite"] for s in sections] == ["decode", "replay", "book"]
    assert [f["name"] for f in sections[0]["figures"]] == ["decode fast"]
    assert sections[1]["error"] == "boom: failed"
    assert sections[2]["when"] == "yesterday"
    table = (tmp_path / "results.md").read_text()
    assert "## book (yesterday)" in table and "| decode fast | 50 msg/s |" in table
    assert "**Failed, no figures:** boom: failed" in table and "decode old" not in table


def test_full_run_drops_stale_sections_and_unknown_suites_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "HERE", tmp_path)
    monkeypatch.setattr(runner, "SUITES", ["decode"])
    monkeypatch.setattr(runner, "run_suite", lambda name: ([figure("decode", 5.0)], None))
    (tmp_path / "results.json").write_text(
        json.dumps(
            {
                "meta": {},
                "sections": [{"suite": "gone", "when": "old", "figures": [], "error": None}],
            }
        )
    )
    assert runner.main([]) == 0
    assert [
        s["suite"] for s in json.loads((tmp_path / "results.json").read_text())["sections"]
    ] == ["decode"]
    assert runner.main(["nope"]) == 2
