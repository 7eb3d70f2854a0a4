"""One GET, its failure classified: the HTTP part the HTTP providers share.

httpx does the HTTP; this module only maps what can go wrong onto the provider
errors the batch reacts to (errors.py): timeouts, connection failures and 5xx are
transient, 429 is RateLimited carrying Retry-After, 401/403 are refusals, 404 an
unknown symbol, anything else unusable data. It never retries (the batch does,
with tenacity, so the rate limiter sees every attempt) and never puts a URL in a
message, because Alpha Vantage carries the key in the query string.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import httpx

from snapshotter import __version__
from snapshotter.errors import BadProviderData, ProviderRefused, RateLimited, SymbolNotFound, TransientProviderError
from snapshotter.ops.logs import redact


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def _body_hint(resp: httpx.Response) -> str:
    text = " ".join(resp.text[:200].split())
    return redact(text)


class HttpGetter:
    def __init__(self, provider: str, base_url: str, timeout: float, headers: dict[str, str] | None = None):
        self.provider = provider
        self.base_url = base_url.rstrip("/")  # joined by hand: httpx would add "/" to ".../query"
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": f"snapshotter/{__version__}", "Accept": "application/json", **(headers or {})},
            follow_redirects=True,
        )

    def get(self, path: str, params: dict | None, what: str) -> str:
        """GET and return the body text of a 2xx answer, or raise a classified ProviderError."""
        try:
            resp = self.client.get(self.base_url + path, params=params)
        except httpx.TimeoutException:
            raise TransientProviderError(f"{self.provider}: {what}: timed out") from None
        except httpx.TransportError as exc:
            raise TransientProviderError(f"{self.provider}: {what}: {type(exc).__name__}: {redact(str(exc))}") from None
        code = resp.status_code
        if code == 429:
            wait = retry_after_seconds(resp.headers.get("Retry-After"))
            raise RateLimited(f"{self.provider}: {what}: HTTP 429 too many requests", retry_after=wait)
        if code in (401, 403):
            raise ProviderRefused(f"{self.provider}: {what}: HTTP {code} refused: {_body_hint(resp)}")
        if code == 404:
            raise SymbolNotFound(f"{self.provider}: {what}: HTTP 404 not found")
        if code >= 500:
            raise TransientProviderError(f"{self.provider}: {what}: HTTP {code}")
        if not 200 <= code < 300:
            raise BadProviderData(f"{self.provider}: {what}: HTTP {code}: {_body_hint(resp)}")
        return resp.text

    def close(self) -> None:
        self.client.close()
