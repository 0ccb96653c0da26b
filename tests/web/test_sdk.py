"""``GET /sdk/nexus.js`` over HTTP: the served script, its size bar, caching and CORS.

The browser behaviour of the SDK is in ``test_sdk_browser.py``; these tests check what any
site's ``<script src>`` receives.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nexus import __version__
from nexus.web import sdk

SIZE_BAR = 30 * 1024  # the bar: 30 KB gzipped, without the model artifact


def test_served_without_credentials_as_javascript(client: TestClient) -> None:
    response = client.get("/sdk/nexus.js")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_the_inference_code_comes_first_then_the_sdk(client: TestClient) -> None:
    text = client.get("/sdk/nexus.js").text
    edge = (sdk.STATIC / "edge-emotion.js").read_text(encoding="utf-8")
    assert text.startswith(edge.rstrip())
    assert text.index("root.NexusEdgeEmotion = api") < text.index("window.nexus = nexus")
    assert f'var VERSION = "{__version__}";' in text
    assert sdk.VERSION_MARK not in text


def test_gzipped_size_is_within_the_bar(client: TestClient) -> None:
    body = client.get("/sdk/nexus.js").content
    size = len(gzip.compress(body, compresslevel=9))
    print(f"/sdk/nexus.js: {len(body)} bytes, {size} bytes gzipped (level 9)")
    assert size <= SIZE_BAR


def test_strong_etag_and_304(client: TestClient) -> None:
    first = client.get("/sdk/nexus.js")
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)  # strong: no W/ prefix
    assert client.get("/sdk/nexus.js").headers["etag"] == etag
    for condition in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        again = client.get("/sdk/nexus.js", headers={"If-None-Match": condition})
        assert again.status_code == 304, condition
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["access-control-allow-origin"] == "*"
    stale = client.get("/sdk/nexus.js", headers={"If-None-Match": '"not-this-one"'})
    assert stale.status_code == 200
    assert stale.content == first.content


def test_any_site_may_load_it(client: TestClient) -> None:
    response = client.get("/sdk/nexus.js", headers={"Origin": "https://shop.example"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["cross-origin-resource-policy"] == "cross-origin"


def test_head_answers_the_headers_alone(client: TestClient) -> None:
    response = client.head("/sdk/nexus.js")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) == len(client.get("/sdk/nexus.js").content)


def test_not_in_the_openapi_document(client: TestClient) -> None:
    assert "/sdk/nexus.js" not in client.get("/openapi.json").json()["paths"]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_loads_without_a_browser(client: TestClient, tmp_path: Path) -> None:
    """Outside a browser (no window) the script defines the inference code and does nothing
    else: it must never throw where it cannot run."""
    path = tmp_path / "nexus.js"
    path.write_bytes(client.get("/sdk/nexus.js").content)
    runner = (
        f"const edge = require({str(path)!r}); "
        "if (typeof edge.EdgeModel !== 'function') process.exit(3); "
        "if (typeof globalThis.nexus !== 'undefined') process.exit(4);"
    )
    done = subprocess.run(
        ["node", "-e", runner], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_the_edge_model_may_be_read_by_any_site(client: TestClient) -> None:
    """The SDK on a shop's own origin reads visitors' words in the browser: the model's JSON
    answers CORS (its preflight too), as ingestion and decide do."""
    origin = {"Origin": "https://shop.example"}
    response = client.get("/v1/emotion/edge-model", headers=origin)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", "https://shop.example")
    assert response.json()["format"] == "nexus-edge-emotion"
    preflight = client.options(
        "/v1/emotion/edge-model",
        headers={**origin, "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code in (200, 204)
    assert "GET" in preflight.headers["access-control-allow-methods"]
