"""``nexus demo`` end to end: the real command, a real port, real HTTP.

The demo is the first thing a newcomer runs, and it is only useful if everything it prints
works: the server is up quickly, the secret key authenticates, the printed login signs in
over plain HTTP (no Secure cookie on http://127.0.0.1), and running it again on the same
data directory hands out fresh credentials while revoking the old secret key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.cli.demo_process import (
    READY_TIMEOUT_S,
    DemoInfo,
    DemoProcess,
    http_login,
    running_demo,
)

SESSION_COOKIE = "nexus_session"


@dataclass(frozen=True)
class RunningDemo:
    process: DemoProcess
    info: DemoInfo
    ready_after_s: float


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    """One demo server shared by the read-only checks below; always stopped afterwards."""
    with running_demo(tmp_path_factory.mktemp("demo")) as (process, info, ready_after_s):
        yield RunningDemo(process, info, ready_after_s)


def _cookie_attributes(set_cookie: str) -> tuple[str, set[str]]:
    """The cookie's value and its lower-cased attribute names (``httponly``, ``path``, …)."""
    first, *attributes = (part.strip() for part in set_cookie.split(";"))
    value = first.partition("=")[2]
    return value, {a.partition("=")[0].lower() for a in attributes if a}


def test_banner_names_the_port_and_the_demo_workspace(demo: RunningDemo) -> None:
    """The URL to open must be the port asked for, and the login the documented demo user."""
    assert demo.info.url == f"http://127.0.0.1:{demo.process.port}"
    assert demo.info.email == "demo@nexus.local"
    assert demo.info.workspace_name == "Demo Shop"
    assert len(demo.info.password) >= 12


def test_ready_within_sixty_seconds(
    demo: RunningDemo, record_property: Callable[[str, object], None]
) -> None:
    """The spec promises a demo that answers /readyz within 60 s of being started."""
    record_property("demo_ready_after_s", round(demo.ready_after_s, 3))
    print(f"nexus demo answered /readyz 200 after {demo.ready_after_s:.2f} s")
    assert demo.ready_after_s < READY_TIMEOUT_S
    response = httpx.get(f"{demo.info.url}/readyz", timeout=5)
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


def test_printed_secret_key_authenticates(demo: RunningDemo) -> None:
    """The ``curl`` the demo suggests must work: the secret key is a live key of the workspace."""
    response = httpx.get(
        f"{demo.info.url}/v1/me",
        headers={"Authorization": f"Bearer {demo.info.secret_key}"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    me = response.json()
    assert me["kind"] == "secret_key"
    assert me["workspace_id"] == demo.info.workspace_id


def test_printed_login_signs_in_over_plain_http(demo: RunningDemo) -> None:
    """The demo runs on http://127.0.0.1: the session cookie must be HttpOnly but not Secure,
    or a browser would drop it and the printed login would appear not to work."""
    with httpx.Client(base_url=demo.info.url, timeout=5) as client:
        signed_out = client.get("/", follow_redirects=False)
        assert signed_out.status_code == 303
        assert signed_out.headers["location"].startswith("/login")

        response = http_login(client, demo.info.email, demo.info.password)
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/"
        session_headers = [
            h for h in response.headers.get_list("set-cookie") if h.startswith(f"{SESSION_COOKIE}=")
        ]
        assert len(session_headers) == 1, response.headers.get_list("set-cookie")
        value, attributes = _cookie_attributes(session_headers[0])
        assert value
        assert "httponly" in attributes
        assert "secure" not in attributes

        dashboard = client.get("/")
        assert dashboard.status_code == 200
        assert "Demo Shop" in dashboard.text
        assert demo.info.write_key in dashboard.text


def test_the_demo_history_carries_emotion_by_funnel_step(demo: RunningDemo) -> None:
    """The seeded chat messages are read like ingested ones: the funnel's steps have an
    emotional profile, and people about to leave sound unhappier than those who buy."""
    auth = {"Authorization": f"Bearer {demo.info.secret_key}"}
    funnels = httpx.get(f"{demo.info.url}/v1/funnels", headers=auth, timeout=10).json()
    funnel_id = funnels["items"][0]["id"]
    response = httpx.get(
        f"{demo.info.url}/v1/emotion/cohorts",
        params={"by": "step", "funnel_id": funnel_id, "resamples": 200},
        headers=auth,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    groups = {g["group"]: g for g in response.json()["groups"]}
    assert len(groups) == 4
    assert all(g["count"] > 10 for g in groups.values())
    assert (
        groups["4. Order Completed"]["valence"]["mean"]
        > groups["1. Landing Viewed"]["valence"]["mean"]
    )


def test_second_run_on_same_data_dir_rotates_credentials(tmp_path: Path) -> None:
    """Re-running the demo must keep the workspace but print a new password that works, and
    revoke the previous demo secret key (a secret is shown only once, so the old one is of no
    use to anybody but whoever copied it from a terminal)."""
    data_dir = tmp_path / "data"
    first_process = DemoProcess(data_dir=data_dir, workdir=tmp_path)
    try:
        first_process.start()
        first = first_process.wait_for_banner()
        first_process.wait_ready(first.url)
        before = httpx.get(
            f"{first.url}/v1/me", headers={"Authorization": f"Bearer {first.secret_key}"}
        )
        assert before.status_code == 200, before.text
    finally:
        exit_code = first_process.stop()
    assert exit_code == 0, f"Ctrl-C should stop the demo cleanly\n{first_process.output()}"

    second_process = DemoProcess(data_dir=data_dir, workdir=tmp_path)
    try:
        second_process.start()
        second = second_process.wait_for_banner()
        second_process.wait_ready(second.url)

        assert second.workspace_id == first.workspace_id
        assert second.write_key == first.write_key
        assert second.password != first.password
        assert second.secret_key != first.secret_key

        with httpx.Client(base_url=second.url, timeout=5) as client:
            assert http_login(client, second.email, first.password).status_code == 401
        with httpx.Client(base_url=second.url, timeout=5) as client:
            signed_in = http_login(client, second.email, second.password)
            assert signed_in.status_code == 303, signed_in.text
            assert "Demo Shop" in client.get("/").text

        old = httpx.get(
            f"{second.url}/v1/me", headers={"Authorization": f"Bearer {first.secret_key}"}
        )
        assert old.status_code == 401, old.text
        new = httpx.get(
            f"{second.url}/v1/me", headers={"Authorization": f"Bearer {second.secret_key}"}
        )
        assert new.status_code == 200, new.text
        assert new.json()["workspace_id"] == second.workspace_id
    finally:
        second_process.stop()


def test_the_demo_decides_for_visitors_and_its_simulator_drives_decide(
    demo: RunningDemo,
) -> None:
    """The printed write key asks /v1/decide: the demo's flags, experiment and adaptations
    answer; and the demo's simulated visitors are already being decided for."""
    basic = httpx.BasicAuth(demo.info.write_key, "")
    answer = httpx.post(
        f"{demo.info.url}/v1/decide",
        json={"visitor_id": "demo-reader", "emotion": {"anger": 0.9, "valence": -0.8}},
        auth=basic,
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    decision = answer.json()
    assert decision["flags"]["calm-checkout"]["value"] is True
    assert decision["flags"]["support-chat"]["value"] is True
    assert decision["adaptation"]["key"] in {"neutral", "calm", "reassuring", "urgent"}
    if not decision["holdout"]:
        assert decision["experiments"]["pricing-test"]["variant"] in {"a", "b"}
    auth = {"Authorization": f"Bearer {demo.info.secret_key}"}
    deadline = time.monotonic() + 30
    simulated: list[object] = []
    while time.monotonic() < deadline and not simulated:
        page = httpx.get(
            f"{demo.info.url}/v1/events",
            params={"event": "$decision", "limit": 50},
            headers=auth,
            timeout=10,
        ).json()
        simulated = [e for e in page["items"] if e["anonymousId"] != "demo-reader"]
        time.sleep(0.5)
    assert simulated, "the demo's simulated visitors made no decisions within 30 s"
