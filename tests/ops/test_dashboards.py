"""The Grafana dashboards and their provisioning: every query parses (promtool, as a recording
rule) and names only series the services export; Grafana finds the dashboards and the data
source where docker-compose.yml mounts them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.ops.catalogue import unknown
from tests.ops.files import DASHBOARDS, PROVISIONING, ROOT, load, promtool
from tests.ops.promql import Selector, grafana_to_promql, selectors

EXPECTED = {"tandem-pipeline", "tandem-review", "tandem-models", "tandem-audit"}
_LABEL_VALUES = re.compile(r"^label_values\((.+),\s*(\w+)\)$")


def dashboards() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in DASHBOARDS]


def datasource() -> dict[str, Any]:
    [source] = load(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    return dict(source)


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target, as Grafana would send it."""
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield (
                f"{board['uid']}/{panel['title']}/{target['refId']}",
                grafana_to_promql(target["expr"]),
            )


def variable_selectors(board: dict[str, Any]) -> Iterator[Selector]:
    """label_values(SERIES, LABEL) variables: the series, and the label read off it."""
    for variable in board["templating"]["list"]:
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text)
        assert match, f"{board['uid']}: variable {variable['name']} is not label_values(...)"
        [series] = selectors(match[1])
        yield Selector(series.name, series.labels | {match[2]})


def test_the_four_dashboards_are_there_once() -> None:
    assert DASHBOARDS, "no dashboard in deploy/grafana/dashboards"
    uids = [board["uid"] for board in dashboards()]
    assert sorted(uids) == sorted(EXPECTED)


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    # Each query as a recording rule, which promtool parses; the label says where it is from.
    rules = [
        {"record": f"dashboard:query_{n}", "expr": expr, "labels": {"panel": where}}
        for n, (where, expr) in enumerate(q for board in dashboards() for q in queries(board))
    ]
    assert rules
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboards_name_only_series_the_services_export() -> None:
    problems = {
        where: found
        for board in dashboards()
        for where, expr in queries(board)
        if (found := unknown(selectors(expr)))
    }
    assert problems == {}
    variables = [s for board in dashboards() for s in variable_selectors(board)]
    assert variables
    assert unknown(variables) == []


def test_every_panel_queries_the_provisioned_prometheus() -> None:
    uid = datasource()["uid"]
    for board in dashboards():
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == uid, (board["uid"], panel["title"])
            assert panel["targets"], (board["uid"], panel["title"])
            assert {t["datasource"]["uid"] for t in panel["targets"]} == {uid}
        assert {v["datasource"]["uid"] for v in board["templating"]["list"]} <= {uid}


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    for board in dashboards():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), board["uid"]
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (board["uid"], panel["title"])
            assert panel["description"], (board["uid"], panel["title"])


def test_grafana_finds_the_data_source_and_the_dashboards_where_compose_mounts_them() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in grafana["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    [provider] = load(PROVISIONING / "dashboards" / "tandem.yml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == mounts["./deploy/grafana/dashboards"]
    source = datasource()
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in _compose()["services"]["prometheus"]["ports"]


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))
