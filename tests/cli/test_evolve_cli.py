"""``nexus evolve start|status|pause|resume|stop``: evolution campaigns from the command line,
on the same database the server reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nexus.core.settings import Settings
from nexus.evolution.samples import demo_campaign
from nexus.pages import samples
from nexus.pages import service as pages
from nexus.pages.models import HostedFunnelCreate
from nexus.storage.database import Database
from tests.cli.test_events_cli import Cli, cli, data_dir, workspace  # noqa: F401 - fixtures


@pytest.fixture
def hosted(workspace: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    monkeypatch.setenv("NEXUS_DATA_DIR", str(data_dir))
    database = Database(Settings().resolved_database_url)
    try:
        with database.session() as db:
            pages.create(
                db,
                workspace_id=workspace,
                data=HostedFunnelCreate.model_validate(samples.demo_funnel()),
            )
    finally:
        database.dispose()
    return workspace


def test_start_status_pause_resume_and_stop(cli: Cli, hosted: str, tmp_path: Path) -> None:  # noqa: F811
    document = tmp_path / "campaign.json"
    document.write_text(json.dumps(demo_campaign(seed=3)), encoding="utf-8")
    started = cli("evolve", "start", str(document), "--json").json()
    assert started["key"] == "offer-page"
    assert started["status"] == "running"
    assert started["space_size"] == 144
    listed = cli("evolve", "status", "--json").json()
    assert [c["key"] for c in listed] == ["offer-page"]
    shown = cli("evolve", "status", "offer-page")
    assert shown.returncode == 0
    assert "offer-page evolves spring-sale/offer" in shown.stdout
    assert cli("evolve", "pause", "offer-page", "--json").json()["status"] == "paused"
    assert cli("evolve", "resume", "offer-page", "--json").json()["status"] == "running"
    # Nothing measured yet: there is no champion to promote.
    refused = cli("evolve", "promote", "offer-page").one_line_error(1)
    assert "No design has been measured yet" in refused
    assert cli("evolve", "stop", "offer-page", "--json").json()["status"] == "stopped"
    assert "cannot be stopped" in cli("evolve", "stop", "offer-page").one_line_error(1)


def test_bad_documents_get_one_line_errors(cli: Cli, hosted: str, tmp_path: Path) -> None:  # noqa: F811
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    assert "is not JSON" in cli("evolve", "start", str(broken)).one_line_error(2)
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({**demo_campaign(), "genes": []}), encoding="utf-8")
    assert "invalid campaign: genes" in cli("evolve", "start", str(invalid)).one_line_error(2)
    missing = cli("evolve", "start", str(tmp_path / "nope.json")).one_line_error(2)
    assert "cannot read" in missing
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({**demo_campaign(), "funnel": "nope"}), encoding="utf-8")
    assert "No hosted funnel 'nope'" in cli("evolve", "start", str(elsewhere)).one_line_error(1)
    assert "No evolution campaign" in cli("evolve", "status", "ghost").one_line_error(1)
