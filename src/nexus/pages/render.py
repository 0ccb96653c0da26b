"""Server-side rendering of hosted pages: one visitor's variant and adaptation are decided
before the first byte, so the page arrives adapted (no flash of unstyled content).

Everything a page author wrote is escaped (Jinja autoescape); design tokens are checked
against a strict pattern before they reach the page's ``<style>``; the bootstrap document
the SDK reads is JSON inside ``<script type="application/json">`` with ``<`` escaped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from nexus.pages.blocks import Page, Shown, layout, tone_copy

HERE = Path(__file__).parent
_TOKEN_NAME = re.compile(r"^(--)?[a-z0-9][a-z0-9-]{0,62}$")
# Colours, lengths, numbers, font names: no ; { } < > \ quotes or url(), so a token cannot
# leave its declaration.
_TOKEN_VALUE = re.compile(r"^[#a-zA-Z0-9 .,%()+-]{1,100}$")

environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)


def css_tokens(tokens: dict[str, Any]) -> dict[str, str]:
    """The tokens that are safe CSS custom properties, named ``--…`` (``accent`` becomes
    ``--nexus-accent``); others are dropped (the SDK applies them through the CSSOM)."""
    out: dict[str, str] = {}
    for name, value in tokens.items():
        text = str(value)
        if isinstance(value, bool) or not _TOKEN_NAME.match(name) or "url(" in text.lower():
            continue
        if not _TOKEN_VALUE.match(text):
            continue
        out[name if name.startswith("--") else f"--nexus-{name}"] = text
    return out


def _json_script(value: Any) -> Markup:
    raw = orjson.dumps(value).decode()
    safe = raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(safe)  # noqa: S704 - JSON with <, > and & escaped: inert in a script element


def money(amount: float, currency: str) -> str:
    whole = float(amount).is_integer()
    return f"{amount:,.0f} {currency}" if whole else f"{amount:,.2f} {currency}"


environment.filters["money"] = money


def render(
    *,
    page: Page,
    title_suffix: str,
    variant: str | None,
    adaptation: dict[str, Any] | None,
    bootstrap: dict[str, Any],
    nonce: str,
    base_path: str,
    step_index: int,
    step_count: int,
    preview: bool = False,
    base_tokens: dict[str, str] | None = None,
    default_tone: str | None = None,
) -> str:
    """The page's HTML. ``base_path`` is the funnel's URL prefix (``./step`` links resolve
    against it); ``preview`` renders for the editor (no SDK, nothing tracked).
    ``base_tokens`` and ``default_tone`` are a design's (evolution): the visitor's UI
    adaptation overrides both."""
    tone = (adaptation.get("tone") if adaptation else None) or default_tone
    blocks: list[tuple[Shown, bool]] = layout(page, variant=variant, tone=tone)
    tokens = css_tokens(base_tokens or {})
    if adaptation:
        tokens.update(css_tokens(adaptation.get("tokens", {})))
    bootstrap = {**bootstrap, "tones": tone_copy(page, variant=variant)}
    return environment.get_template("hosted.html").render(
        page=page,
        title_suffix=title_suffix,
        blocks=blocks,
        only_tones={b.id: " ".join(b.only_tones) for b in page.blocks if b.only_tones},
        tone=tone,
        adaptation_key=adaptation.get("key") if adaptation else None,
        tokens=tokens,
        bootstrap=_json_script(bootstrap),
        nonce=nonce,
        base_path=base_path,
        step_index=step_index,
        step_count=step_count,
        preview=preview,
    )


def original(shown: Shown, field: str) -> Markup:
    """For a field rendered in a tone's words, its own text as ``data-nexus-original``: the
    SDK restores it when the visitor's tone changes to one without an override."""
    if shown.tone is None or shown.original is None:
        return Markup("")
    text = shown.original.get(field)
    if not isinstance(text, str):
        return Markup("")
    return Markup(' data-nexus-original="{}"').format(text)


environment.globals["original"] = original


def href(target: str, base_path: str) -> str:
    """A block's link: ``./step`` within the funnel, else as written (validated on save)."""
    return base_path + target[2:] if target.startswith("./") else target


environment.globals["href"] = href


def hex_luminance(colour: str) -> float:
    """WCAG relative luminance of ``#rgb`` or ``#rrggbb``."""
    value = colour.lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    if not re.fullmatch(r"[0-9a-fA-F]{6}", value):
        raise ValueError(f"not a hex colour: {colour!r}")
    channels = [int(value[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast_ratio(foreground: str, background: str) -> float:
    """WCAG contrast ratio of two hex colours (1 to 21; AA body text needs 4.5)."""
    a, b = sorted((hex_luminance(foreground), hex_luminance(background)), reverse=True)
    return (a + 0.05) / (b + 0.05)
