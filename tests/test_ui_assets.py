"""The UI as the API process serves it: the page at / and /tasks/{id} (never cached, with a strict
Content-Security-Policy), the hashed assets (cached for a year, gzip when asked, ETag), and the API's
one error shape for an asset that does not exist."""

import json
import re

import pytest

from taskevents.api.ui import CSP, default_dist
from tests.api_helpers import TestClient

pytestmark = pytest.mark.redis_server


def manifest() -> dict[str, str]:
    return json.loads((default_dist() / "manifest.json").read_text())


def test_the_pages_load_the_bundle_under_a_strict_policy(api_http: TestClient) -> None:
    for path in ("/", "/tasks/some-task", "/tasks/an%20id%20with%20spaces", "/tasks/a/b"):
        page = api_http.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"  # a new release is picked up on the next load
        assert page.headers["content-security-policy"] == CSP
        assert page.headers["x-content-type-options"] == "nosniff"
        assert (
            f'src="/assets/{manifest()["js"]}"' in page.text
            and f'href="/assets/{manifest()["css"]}"' in page.text
        )
        scripts = re.findall(r"<script\b[^>]*>", page.text)
        assert scripts and all(" src=" in tag for tag in scripts), scripts  # no inline script
    for directive in (
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ):
        assert directive in CSP
    assert "unsafe" not in CSP


def test_assets_are_immutable_compressed_and_validated(api_http: TestClient) -> None:
    name = manifest()["js"]
    plain = api_http.get(f"/assets/{name}", headers={"accept-encoding": "identity"})
    assert plain.status_code == 200 and plain.headers["content-type"] == "text/javascript; charset=utf-8"
    assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "content-encoding" not in plain.headers
    assert plain.content == (default_dist() / name).read_bytes()
    packed = api_http.get(f"/assets/{name}", headers={"accept-encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip" and packed.headers["vary"] == "Accept-Encoding"
    assert packed.content == plain.content  # as the browser unpacks it
    assert packed.num_bytes_downloaded < len(plain.content) / 2
    etag = plain.headers["etag"]
    again = api_http.get(f"/assets/{name}", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    css = api_http.get(f"/assets/{manifest()['css']}")
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert api_http.get(f"/assets/{name}", headers={"if-none-match": f'"x", W/{etag}'}).status_code == 304
    refused = api_http.get(f"/assets/{name}", headers={"accept-encoding": "gzip;q=0, br"})
    assert "content-encoding" not in refused.headers
    licences = api_http.get("/assets/LICENSES.txt")
    assert licences.status_code == 200 and "preact" in licences.text and "MIT" in licences.text
    assert licences.headers["cache-control"] == "no-cache"  # no hash in its name: revalidated


def test_an_unknown_asset_is_a_404_in_the_error_shape(api_http: TestClient) -> None:
    for name in ("nope.js", "..%2E.py", "manifest.json", "%2E%2E"):
        missing = api_http.get(f"/assets/{name}")
        assert missing.status_code == 404, name
        assert missing.json()["code"] == "not_found"
