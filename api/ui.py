"""The runner UI, served by the API process: the page at `/` and `/tasks/{task_id}`, its assets at
`/assets/{name}`.

The UI is TypeScript and Preact, bundled ahead of time by esbuild into `api/ui/dist/` (committed, and
shipped inside the package: see api/ui/build.mjs), so neither installing nor running needs Node, and
nothing is fetched from anywhere else. Asset names carry a hash of their content: they are served with
a year's cache lifetime, compressed when the browser takes gzip; the page itself is never cached, so a
new release is picked up on the next load. Every page carries a Content-Security-Policy that allows
only this origin's own script, style and connections (no inline script), and the UI renders every
string of an event as text.
"""

import gzip
import hashlib
import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request, Response

from taskevents.api.errors import ApiError

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str
    hashed: bool  # the name carries a hash of the content (app-<hash>.js)


class UiAssets:
    """The built UI, read once: the page's HTML and each asset, with its gzip form."""

    def __init__(self, dist: Path) -> None:
        manifest = json.loads((dist / "manifest.json").read_text())
        self.assets: dict[str, Asset] = {}
        for path in dist.iterdir():
            if path.suffix in TYPES:
                body = path.read_bytes()
                self.assets[path.name] = Asset(
                    body,
                    gzip.compress(body, compresslevel=9, mtime=0),
                    TYPES[path.suffix],
                    '"' + hashlib.sha256(body).hexdigest()[:16] + '"',
                    path.name in (manifest["js"], manifest["css"]),
                )
        self.page = (
            "<!doctype html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            "<title>taskevents</title>\n"
            '<link rel="icon" href="data:,">\n'
            f'<link rel="stylesheet" href="/assets/{manifest["css"]}">\n'
            f'<script type="module" src="/assets/{manifest["js"]}"></script>\n'
            '</head>\n<body>\n<div id="app"></div>\n'
            '<noscript>The taskevents UI needs JavaScript. The API is described at <a href="/docs">/docs</a>.'
            "</noscript>\n</body>\n</html>\n"
        ).encode()


def _etags(header: str) -> set[str]:
    """The entity tags of an If-None-Match header (a list; weak ones compare equal here)."""
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _takes_gzip(header: str) -> bool:
    """Accept-Encoding lists gzip without q=0."""
    for part in header.lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def default_dist() -> Path:
    return Path(str(files("taskevents.api") / "ui" / "dist"))


def ui_router(assets: UiAssets) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def page() -> Response:
        headers = {"Cache-Control": "no-cache", **SECURITY_HEADERS}
        return Response(assets.page, media_type="text/html; charset=utf-8", headers=headers)

    @router.get("/")
    async def task_list() -> Response:
        return page()

    @router.get("/tasks/{task_id:path}")  # any id, so that the page can say why one with / has no events
    async def task_page(task_id: str) -> Response:
        return page()  # the page reads the task itself, through the API

    @router.get("/assets/{name}")
    async def asset(name: str, request: Request) -> Response:
        found = assets.assets.get(name)
        if found is None:
            raise ApiError(404, "not_found", f"no asset {name!r}")
        headers = {
            # A hashed name never changes content: cached for a year. LICENSES.txt has no hash.
            "Cache-Control": "public, max-age=31536000, immutable" if found.hashed else "no-cache",
            "ETag": found.etag,
            "Vary": "Accept-Encoding",
            **SECURITY_HEADERS,
        }
        if found.etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        if _takes_gzip(request.headers.get("accept-encoding", "")):
            headers["Content-Encoding"] = "gzip"
            return Response(found.gzipped, media_type=found.media_type, headers=headers)
        return Response(found.body, media_type=found.media_type, headers=headers)

    return router
