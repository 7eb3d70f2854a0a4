"""Fake HTTP services on 127.0.0.1 (pytest-httpserver): Alpha Vantage- and Polygon-shaped
endpoints, and the alert webhook and healthchecks.io-style ping receiver.

Each provider fake holds per-symbol daily closes and a per-symbol script of special
answers (throttle notes, quota messages, 429/403/500, slow, held or broken bodies)
served before the normal data; every request is recorded, so tests can assert
exactly how many calls a run made and with what parameters.

This is a plain helper module; the fixtures (``http_server``, ``server``, ``av``,
``poly``, ``receiver``) live in conftest.py.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time as dtime
from decimal import Decimal

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from snapshotter.core.calendar import NEW_YORK

AV_KEY = "AVKEY-secret-1234"
POLY_KEY = "POLYKEY-secret-5678"

AV_NOTE = {
    "Note": "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute and 500 calls per day. "
    "Please visit https://www.alphavantage.co/premium/ if you would like to target a higher API call frequency."
}
AV_BURST = {
    "Information": "Thank you for using Alpha Vantage! Please consider spreading out your free API requests more sparingly "
    "(1 request per second). You may subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to lift "
    "the free key rate limit (25 requests per day), raise the per-second burst limit, and instantly unlock all premium endpoints"
}
AV_QUOTA = {
    "Information": f"We have detected your API key as {AV_KEY} and our standard API rate limit is 25 requests per day. "
    "Please subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly remove all daily rate limits."
}
AV_PREMIUM = {
    "Information": "Thank you for using Alpha Vantage! The **outputsize=full** parameter value is a premium feature for the "
    "TIME_SERIES_DAILY endpoint. You may subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to "
    "instantly unlock all premium features"
}
AV_ERROR = {
    "Error Message": "Invalid API call. Please retry or visit the documentation (https://www.alphavantage.co/documentation/) "
    "for TIME_SERIES_DAILY."
}
HTML = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>"


def dumps(body) -> str:
    """JSON with Decimals written as bare numbers, exactly as given (Polygon sends numbers)."""
    text = json.dumps(body, default=lambda v: f"@@{v}@@" if isinstance(v, Decimal) else str(v))
    return re.sub(r'"@@([^@]*)@@"', r"\1", text)


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    text = body if isinstance(body, str) else dumps(body)
    return Response(text, status=status, headers=headers or {}, content_type="application/json")


def slow(response: Response, seconds: float):
    def answer():
        time.sleep(seconds)
        return response

    return answer


def held(response: Response, arrived: threading.Event, release: threading.Event, timeout: float = 60):
    """An answer that signals its request arrived, then waits for the test to let it go."""

    def answer():
        arrived.set()
        release.wait(timeout)
        return response

    return answer


def epoch_ms(d: date, at: dtime) -> int:
    return int(datetime.combine(d, at, tzinfo=NEW_YORK).timestamp() * 1000)


class _Fake:
    def __init__(self):
        self.series: dict[str, dict[date, str]] = defaultdict(dict)  # symbol -> day -> close text
        self.script: dict[str, list] = defaultdict(list)  # key -> answers served first, in order
        self.requests: list[dict] = []

    def add(self, symbol: str, closes: dict) -> None:
        for d, c in closes.items():
            self.series[symbol][date.fromisoformat(d) if isinstance(d, str) else d] = str(c)

    def then(self, key: str, *answers) -> None:
        self.script[key].extend(answers)

    def _scripted(self, key: str):
        if self.script.get(key):
            answer = self.script[key].pop(0)
            return answer() if callable(answer) and not isinstance(answer, Response) else answer
        return None


class FakeAlphaVantage(_Fake):
    """GET /query?function=TIME_SERIES_DAILY&symbol=..&outputsize=..&apikey=.., and function=SPLITS&symbol=..&apikey=.."""

    def __init__(self):
        super().__init__()
        self.quota_after: int | None = None  # calls answered before the daily-quota message
        self.split_events: dict[str, list[tuple[str, str]]] = {}  # symbol -> [(effective_date, split_factor)]

    def handle(self, request: Request) -> Response:
        args = request.args
        sym = args.get("symbol", "")
        self.requests.append({"symbol": sym, "outputsize": args.get("outputsize"), "apikey": args.get("apikey"), "function": args.get("function")})
        if args.get("apikey") != AV_KEY:
            return json_response({"Error Message": "the parameter apikey is invalid or missing. Please claim your free API key."})
        if self.quota_after is not None and len(self.requests) > self.quota_after:
            return json_response(AV_QUOTA)
        if args.get("function") == "SPLITS":
            scripted = self._scripted(f"splits {sym}")
            if scripted is not None:
                return scripted if isinstance(scripted, Response) else json_response(scripted)
            if sym not in self.split_events:
                return json_response({})  # as Alpha Vantage answers a symbol it has nothing about
            data = [{"effective_date": d, "split_factor": f} for d, f in sorted(self.split_events[sym], reverse=True)]
            return json_response({"symbol": sym, "data": data})
        scripted = self._scripted(sym)
        if scripted is not None:
            return scripted if isinstance(scripted, Response) else json_response(scripted)
        if sym not in self.series:
            return json_response(AV_ERROR)
        return json_response(self.body(sym))

    def body(self, sym: str, rows: dict | None = None) -> dict:
        rows = rows if rows is not None else self.series[sym]
        series = {
            d.isoformat(): {"1. open": c, "2. high": c, "3. low": c, "4. close": c, "5. volume": "1000"}
            for d, c in sorted(rows.items(), reverse=True)
        }
        return {
            "Meta Data": {"1. Information": "Daily Prices (open, high, low, close) and Volumes", "2. Symbol": sym,
                          "3. Last Refreshed": max(rows).isoformat() if rows else "", "4. Output Size": "Compact",
                          "5. Time Zone": "US/Eastern"},
            "Time Series (Daily)": series,
        }

    def calls_for(self, sym: str, function: str = "TIME_SERIES_DAILY") -> int:
        return sum(1 for r in self.requests if r["symbol"] == sym and r["function"] == function)


SPLITS = "/v3/reference/splits"
GROUPED = re.compile(r"^/v2/aggs/grouped/locale/us/market/stocks/(\d{4}-\d{2}-\d{2})$")
RANGE = re.compile(r"^/v2/aggs/ticker/([^/]+)/range/1/day/(\d{4}-\d{2}-\d{2})/(\d{4}-\d{2}-\d{2})$")


class FakePolygon(_Fake):
    """Grouped daily and per-ticker range aggregates, Bearer auth, real HTTP status codes."""

    def __init__(self):
        super().__init__()
        self.extra_tickers = {"ZZZZ": "1.5", "QQQ": "500.25"}  # in every grouped answer, never requested
        self.split_events: list[dict] = []  # /v3/reference/splits results, every ticker
        self.splits_page: int | None = None  # page size (default: the request's limit)

    def handle(self, request: Request) -> Response:
        path = request.path
        g, r = GROUPED.match(path), RANGE.match(path)
        key = f"grouped {g.group(1)}" if g else (f"range {r.group(1)}" if r else ("splits" if path == SPLITS else path))
        self.requests.append({"key": key, "path": path, "args": dict(request.args), "auth": request.headers.get("Authorization")})
        if request.headers.get("Authorization") != f"Bearer {POLY_KEY}":
            return json_response({"status": "ERROR", "request_id": "x", "error": "Unknown API Key"}, 401)
        scripted = self._scripted(key)
        if scripted is not None:
            return scripted if isinstance(scripted, Response) else json_response(scripted)
        if path == SPLITS:
            return json_response(self._splits(request.args))
        if g:
            day = date.fromisoformat(g.group(1))
            results = [self._agg(sym, day, c, dtime(16, 0), ticker=True) for sym, s in sorted(self.series.items()) for d, c in s.items() if d == day]
            if results:
                results += [self._agg(t, day, c, dtime(16, 0), ticker=True) for t, c in self.extra_tickers.items()]
            body = {"queryCount": len(results), "resultsCount": len(results), "adjusted": self._adjusted(request), "status": "OK", "request_id": "g1"}
            if results:
                body["results"] = results
            return json_response(body)
        if r:
            sym, a, b = r.group(1), date.fromisoformat(r.group(2)), date.fromisoformat(r.group(3))
            bars = [self._agg(sym, d, c, dtime(0, 0)) for d, c in sorted(self.series.get(sym, {}).items()) if a <= d <= b]
            body = {"ticker": sym, "queryCount": len(bars), "resultsCount": len(bars), "adjusted": self._adjusted(request), "status": "OK", "request_id": "r1", "count": len(bars)}
            if bars:
                body["results"] = bars
            return json_response(body)
        return json_response({"status": "NOT_FOUND", "message": "not found"}, 404)

    def _splits(self, args) -> dict:
        """Sorted by execution date, filtered by execution_date.gte; the cursor is the offset (the query it continues
        is remembered in it, as Polygon's opaque cursor does); next_url on Polygon's own host, as the real one."""
        if args.get("cursor"):
            since, offset, size = args["cursor"].split(":")
            offset, size = int(offset), int(size)
        else:
            since, offset, size = args.get("execution_date.gte", ""), 0, self.splits_page or int(args.get("limit", 10))
        rows = sorted((e for e in self.split_events if e["execution_date"] >= since), key=lambda e: (e["execution_date"], e["ticker"]))
        body = {"status": "OK", "request_id": "s1", "results": rows[offset : offset + size]}
        if offset + size < len(rows):
            body["next_url"] = f"https://api.polygon.io/v3/reference/splits?cursor={since}:{offset + size}:{size}"
        return body

    @staticmethod
    def _adjusted(request: Request) -> bool:
        """As Polygon answers: split-adjusted unless the request says adjusted=false."""
        return request.args.get("adjusted", "true").lower() != "false"

    @staticmethod
    def _agg(sym: str, d: date, close: str, at: dtime, ticker: bool = False) -> dict:
        c = Decimal(close) if close not in ("null",) else None
        item = {"v": 1000, "vw": c, "o": c, "c": c, "h": c, "l": c, "t": epoch_ms(d, at), "n": 10}
        if ticker:
            item = {"T": sym, **item}
        return item

    def keys(self) -> list[str]:
        return [r["key"] for r in self.requests]


# --- the alert webhook and the ping receiver ---------------------------------------

HOOK_PATH = "/services/T01/B02/hook-s3cr3t"
PING_PATH = "/ping/9d1c-ping-s3cr3t"


@dataclass
class Hit:
    path: str
    query: str
    body: bytes


class Receiver:
    """The webhook and the ping endpoint on the shared local server; every request recorded."""

    def __init__(self, srv: HTTPServer):
        self.srv = srv
        srv.expect_request(HOOK_PATH, method="POST").respond_with_data("ok")
        srv.expect_request(re.compile("^" + re.escape(PING_PATH) + "/"), method="POST").respond_with_data("OK")
        self.env = {"ALERT_WEBHOOK_URL": srv.url_for(HOOK_PATH), "HEALTHCHECK_URL": srv.url_for(PING_PATH)}

    def _hits(self, prefix: str) -> list[Hit]:
        return [
            Hit(req.path, req.query_string.decode(), req.get_data())
            for req, _ in self.srv.log
            if req.path.startswith(prefix)
        ]

    @property
    def alerts(self) -> list[dict]:
        return [json.loads(h.body) for h in self._hits(HOOK_PATH)]

    @property
    def pings(self) -> list[Hit]:
        return self._hits(PING_PATH + "/")

    def finish(self) -> tuple[str, dict]:
        """(path suffix, JSON body) of the one finish ping, after checking the start ping."""
        start, finish = self.pings
        assert (start.path, start.body) == (f"{PING_PATH}/start", b"")
        assert finish.query == start.query and re.fullmatch(r"rid=[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", start.query)
        return finish.path[len(PING_PATH) + 1 :], json.loads(finish.body)


def rid(run_id: str) -> str:
    """A run id as the ping's rid= carries it: the tracking row already spells it that way."""
    assert run_id == str(uuid.UUID(run_id)), run_id  # one spelling everywhere: the canonical UUID form
    return run_id
