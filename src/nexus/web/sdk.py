"""The browser SDK at ``/sdk/nexus.js``: one script for any site (docs/sdk.md).

The file served is the edge emotion inference code (``static/edge-emotion.js``, which defines
``NexusEdgeEmotion``) followed by the SDK (``static/sdk/nexus.js``), so a page needs one script
tag; the model artifact itself is fetched by the SDK from ``/v1/emotion/edge-model`` only when
a visitor's consent lets it read their words. Both files are read once per process; the
answer carries a strong ETag, may be cached for five minutes, and may be loaded from any
origin.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import NamedTuple

from fastapi import APIRouter, Request, Response

from nexus import __version__
from nexus.workspaces.deps import PUBLIC

STATIC = Path(__file__).parent / "static"
SOURCES = (STATIC / "edge-emotion.js", STATIC / "sdk" / "nexus.js")
VERSION_MARK = "__NEXUS_VERSION__"
MEDIA_TYPE = "application/javascript; charset=utf-8"

router = APIRouter(include_in_schema=False)


class Script(NamedTuple):
    body: bytes
    etag: str


@cache
def script() -> Script:
    """The served bytes and their ETag, built on first use."""
    parts = [path.read_text(encoding="utf-8") for path in SOURCES]
    text = "\n".join(part.rstrip() + "\n" for part in parts).replace(VERSION_MARK, __version__)
    body = text.encode("utf-8")
    return Script(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 13.1.2: a list of tags or ``*``, compared weakly (``W/"x"`` matches ``"x"``)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


@router.api_route("/sdk/nexus.js", methods=["GET", "HEAD"], openapi_extra=PUBLIC)
def nexus_js(request: Request) -> Response:
    found = script()
    headers = {
        "ETag": found.etag,
        "Cache-Control": "public, max-age=300",
        # Any site may load it: a script tag needs no CORS, but fetch(), a crossorigin
        # attribute (for error details) and COEP pages do.
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if _matches(request.headers.get("if-none-match"), found.etag):
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else found.body
    headers["Content-Length"] = str(len(found.body))
    return Response(body, media_type=MEDIA_TYPE, headers=headers)
