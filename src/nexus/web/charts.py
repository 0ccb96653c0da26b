"""Charts of the dashboard: plotly.js served from the installed ``plotly`` package, and pure
builders of the figures it draws.

No CDN and no network at run time (ARCHITECTURE.md section 4): the browser loads
``/vendor/plotly.min.js``, the file the Python ``plotly`` package ships, and each chart's
figure arrives in the page as JSON (``templates/_charts.html``), drawn by ``static/charts.js``.
The builders return plain JSON-able dicts in plotly's figure format (``{"data": [...],
"layout": {...}}``): a page pays for a few dicts, not for Python plotly objects and their
validation.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import version
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from nexus.workspaces.deps import PUBLIC

router = APIRouter(include_in_schema=False)

Figure = dict[str, Any]
Number = int | float | None

# Series colours: the dashboard's accent first, then distinct hues that stay apart for the
# common colour-vision deficiencies (Okabe & Ito, "Color Universal Design", 2008).
PALETTE = (
    "#5b4bdb",
    "#e69f00",
    "#009e73",
    "#d55e00",
    "#0072b2",
    "#cc79a7",
    "#56b4e9",
    "#8a6d00",
    "#1d2130",
)
# Red through white to blue (ColorBrewer's RdBu, reversed: blue is the positive end).
DIVERGING: list[list[float | str]] = [[0.0, "#b2182b"], [0.5, "#f7f7f7"], [1.0, "#2166ac"]]
FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif'
HEIGHT = 320


# --- plotly.js ------------------------------------------------------------------------------

# A week in browsers' caches; after that a revalidation that the ETag answers with 304. Not
# "immutable": the URL stays the same when the plotly package is upgraded.
CACHE_CONTROL = "public, max-age=604800"


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    gzipped: bytes
    etag: str


_asset: _Asset | None = None
_asset_lock = threading.Lock()


def plotly_asset() -> _Asset:
    """plotly.min.js from the installed package, with a gzipped copy (4.8 MB becomes about
    1.4 MB on the wire), read and compressed once per process, on first use."""
    global _asset  # noqa: PLW0603 - one immutable file per process
    with _asset_lock:
        if _asset is None:
            body = (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:16]
            _asset = _Asset(
                body=body,
                gzipped=gzip.compress(body, compresslevel=6, mtime=0),
                etag=f'"plotly-{version("plotly")}-{digest}"',
            )
        return _asset


def _accepts_gzip(request: Request) -> bool:
    for part in request.headers.get("accept-encoding", "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


@router.get("/vendor/plotly.min.js", openapi_extra=PUBLIC)
def plotly_js(request: Request) -> Response:
    """The charting library, the same for everyone: public, cacheable, revalidated by ETag."""
    asset = plotly_asset()
    gzipped = _accepts_gzip(request)
    # One ETag per representation (RFC 9110 section 8.8.3): the gzipped body is another.
    etag = asset.etag[:-1] + '-gz"' if gzipped else asset.etag
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Vary": "Accept-Encoding"}
    candidates = {
        t.strip().removeprefix("W/") for t in request.headers.get("if-none-match", "").split(",")
    }
    if etag in candidates or "*" in candidates:
        return Response(status_code=304, headers=headers)
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return Response(
        asset.gzipped if gzipped else asset.body,
        media_type="text/javascript; charset=utf-8",
        headers=headers,
    )


# plotly.js adds style rules at run time (<style> elements, style attributes); under the app's
# `style-src 'self'` the browser blocks them with a console error each, and the mode bar, hover
# labels and the plot's stacked SVG layers lose their layout. Pages that draw charts therefore
# allow inline *styles* -- never inline scripts: script-src stays 'self', so injected markup
# still cannot run code, and Jinja escapes what the pages print. The rest is the app's policy
# (nexus.api.middleware.SECURITY_HEADERS; tests/web/test_dashboard.py checks the two agree).
CHART_PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


def allow_chart_styles(response: Response) -> None:
    """Give a page that draws charts (``chart_scripts()`` in its template) the policy
    plotly.js needs, :data:`CHART_PAGE_CSP`; pages without charts keep the app's."""
    response.headers["Content-Security-Policy"] = CHART_PAGE_CSP


# --- figures --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    """One named sequence of values (None: no value, drawn as a gap)."""

    name: str
    values: Sequence[Number]
    color: str | None = None


@dataclass(frozen=True, slots=True)
class Band:
    """A shaded range between ``lower`` and ``upper`` over ``x`` (a forecast interval)."""

    name: str
    x: Sequence[str | Number]
    lower: Sequence[Number]
    upper: Sequence[Number]
    color: str = PALETTE[0]


def clean(value: Number) -> float | int | None:
    """A value JSON can carry: NaN and infinities become None (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _values(values: Sequence[Number]) -> list[float | int | None]:
    return [clean(v) for v in values]


def _xs(values: Sequence[str | Number]) -> list[str | float | int | None]:
    return [v if isinstance(v, str) else clean(v) for v in values]


def _color(series: Series, index: int) -> str:
    return series.color or PALETTE[index % len(PALETTE)]


def _rgba(color: str, alpha: float) -> str:
    """``#rrggbb`` as ``rgba(r, g, b, alpha)``."""
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red}, {green}, {blue}, {alpha})"


def _layout(*, height: int = HEIGHT, legend: bool = True, **extra: Any) -> dict[str, Any]:
    """What every chart shares: the page's font, no background, small margins (labels get
    room through ``automargin``), the legend above the plot where phones have room for it."""
    layout: dict[str, Any] = {
        "height": height,
        "autosize": True,
        "margin": {"l": 8, "r": 8, "t": 8, "b": 8},
        "font": {"family": FONT, "size": 12, "color": "#1d2130"},
        "paper_bgcolor": "rgba(0, 0, 0, 0)",
        "plot_bgcolor": "rgba(0, 0, 0, 0)",
        "showlegend": legend,
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        "hovermode": "closest",
    }
    layout.update(extra)
    return layout


def _axis(title: str = "", *, fmt: str | None = None, **extra: Any) -> dict[str, Any]:
    axis: dict[str, Any] = {"automargin": True, "gridcolor": "#e3e6ee", "zeroline": False}
    if title:
        axis["title"] = {"text": title}
    if fmt:
        axis["tickformat"] = fmt
    axis.update(extra)
    return axis


def bar_figure(
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    horizontal: bool = False,
    stacked: bool = False,
    value_title: str = "",
    value_format: str | None = None,
    category_title: str = "",
    dates: bool = False,
    height: int = HEIGHT,
) -> Figure:
    """Bars per category, one colour per series; horizontal bars list the first category on
    top (funnel steps read downwards). ``dates``: the categories are ISO dates, drawn on a
    time axis (readable ticks instead of one label per bar)."""
    cats = list(categories)
    data = []
    for index, s in enumerate(series):
        trace: dict[str, Any] = {
            "type": "bar",
            "name": s.name,
            "marker": {"color": _color(s, index)},
            "orientation": "h" if horizontal else "v",
        }
        values = _values(s.values)
        trace["x"], trace["y"] = (values, cats) if horizontal else (cats, values)
        if value_format:
            trace["hovertemplate"] = (
                f"%{{{'y' if horizontal else 'x'}}}: "
                f"%{{{'x' if horizontal else 'y'}:{value_format}}}<extra>{s.name}</extra>"
            )
        data.append(trace)
    value_axis = _axis(value_title, fmt=value_format)
    category_axis = _axis(category_title, type="date" if dates else "category")
    if horizontal:
        category_axis["autorange"] = "reversed"
    return {
        "data": data,
        "layout": _layout(
            height=height,
            legend=len(series) > 1,
            barmode="stack" if stacked else "group",
            xaxis=value_axis if horizontal else category_axis,
            yaxis=category_axis if horizontal else value_axis,
        ),
    }


def line_figure(
    x: Sequence[str | Number],
    series: Sequence[Series],
    *,
    y_title: str = "",
    y_format: str | None = None,
    y_range: tuple[float, float] | None = None,
    x_title: str = "",
    height: int = HEIGHT,
) -> Figure:
    """One line per series over ``x`` (ISO dates make a time axis); gaps where a value is
    None."""
    xs = _xs(x)
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": s.name,
            "x": xs,
            "y": _values(s.values),
            "line": {"color": _color(s, index), "width": 2},
            "marker": {"size": 5},
        }
        for index, s in enumerate(series)
    ]
    y_axis = _axis(y_title, fmt=y_format)
    if y_range is not None:
        y_axis["range"] = list(y_range)
    return {
        "data": data,
        "layout": _layout(
            height=height, legend=len(series) > 1, xaxis=_axis(x_title), yaxis=y_axis
        ),
    }


def heatmap_figure(
    columns: Sequence[str],
    rows: Sequence[str],
    z: Sequence[Sequence[Number]],
    *,
    zmin: float | None = None,
    zmax: float | None = None,
    value_title: str = "",
    value_format: str = ".2f",
    colorscale: str | list[list[float | str]] | None = None,
    height: int | None = None,
) -> Figure:
    """``z[i][j]`` is the value of row ``i`` and column ``j``; rows listed top to bottom, each
    cell labelled with its value (None: an empty cell). The default colours diverge from
    white at the middle of ``[zmin, zmax]``: red below, blue above."""
    if len(z) != len(rows) or any(len(r) != len(columns) for r in z):
        raise ValueError("z must have one row per row label and one value per column")
    trace: dict[str, Any] = {
        "type": "heatmap",
        "x": list(columns),
        "y": list(rows),
        "z": [_values(r) for r in z],
        "colorscale": colorscale or DIVERGING,
        "texttemplate": f"%{{z:{value_format}}}",
        "hovertemplate": f"%{{y}} · %{{x}}: %{{z:{value_format}}}<extra></extra>",
        "colorbar": {"title": {"text": value_title}, "thickness": 12},
        "xgap": 1,
        "ygap": 1,
    }
    if zmin is not None:
        trace["zmin"] = zmin
    if zmax is not None:
        trace["zmax"] = zmax
    return {
        "data": [trace],
        "layout": _layout(
            height=height or max(HEIGHT - 40, 90 + 44 * len(rows)),
            legend=False,
            xaxis=_axis(type="category", side="top", gridcolor="rgba(0, 0, 0, 0)"),
            yaxis=_axis(type="category", autorange="reversed", gridcolor="rgba(0, 0, 0, 0)"),
        ),
    }


def band_figure(
    lines: Sequence[tuple[Sequence[str | Number], Series]],
    bands: Sequence[Band],
    *,
    markers: Sequence[tuple[Sequence[str | Number], Series]] = (),
    y_title: str = "",
    y_range: tuple[float, float] | None = None,
    height: int = HEIGHT,
) -> Figure:
    """Shaded bands (drawn first, underneath), lines over their own x, and unconnected
    markers (observations): a trajectory with its forecast interval."""
    data: list[dict[str, Any]] = []
    for band in bands:
        xs = _xs(band.x)
        # Plotly fills between consecutive traces: the upper edge, then the lower filled up.
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": band.name,
                "x": xs,
                "y": _values(band.upper),
                "line": {"width": 0, "color": band.color},
                "hoverinfo": "skip",
                "showlegend": False,
                "legendgroup": band.name,
            }
        )
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": band.name,
                "x": xs,
                "y": _values(band.lower),
                "line": {"width": 0, "color": band.color},
                "fill": "tonexty",
                "fillcolor": _rgba(band.color, 0.18),
                "hoverinfo": "skip",
                "legendgroup": band.name,
            }
        )
    for index, (line_x, s) in enumerate(lines):
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": s.name,
                "x": _xs(line_x),
                "y": _values(s.values),
                "line": {"color": _color(s, index), "width": 2},
            }
        )
    for index, (marker_x, s) in enumerate(markers):
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": s.name,
                "x": _xs(marker_x),
                "y": _values(s.values),
                "marker": {"color": _color(s, len(lines) + index), "size": 7},
            }
        )
    y_axis = _axis(y_title)
    if y_range is not None:
        y_axis["range"] = list(y_range)
    return {
        "data": data,
        "layout": _layout(height=height, xaxis=_axis(), yaxis=y_axis),
    }
