"""notify.py against real local HTTP servers: exact bodies, paths and query strings,
retries, timeouts, unreachable receivers, and no URL or secret in any log line."""

from __future__ import annotations

import io
import json
import logging
import socket
import sys
import uuid
from datetime import date

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from snapshotter.ops import logs, notify
from snapshotter.config import Settings
from tests.conftest import quiet_logging, wait_until

RUN_ID = "0123456789abcdef0123456789abcdef"  # a run id written as 32 hex digits (0004's default for outside writers)
RID = "01234567-89ab-cdef-0123-456789abcdef"  # what healthchecks.io accepts
HOOK_PATH = "/services/T0001/B0002/hook-s3cr3t-token"
PING_PATH = "/ping/5f0c2e1a-ping-s3cr3t"


@pytest.fixture(autouse=True)
def fast_policy(fast_notify_retries):
    """Every test here: 3 attempts, 0.5 s timeout, next to no backoff."""


@pytest.fixture
def log_text(caplog, monkeypatch):
    """Everything logged: structlog's rendered JSON lines and stdlib records (httpx at DEBUG)."""
    stream = io.StringIO()
    with monkeypatch.context() as m:  # logs.configure binds the sys.stderr of the moment
        m.setattr(sys, "stderr", stream)
        logs.configure("json", "debug")
    caplog.set_level(logging.DEBUG)

    def read() -> str:
        # werkzeug's records are the test receiver's access log, not ours
        ours = [r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug")]
        return stream.getvalue() + "\n" + "\n".join(ours)

    yield read
    quiet_logging()  # back to the suite's logging


def events(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def requests_of(srv: HTTPServer):
    return [req for req, _resp in srv.log]


def assert_no_secret(text: str, *urls: str) -> None:
    for url in urls:
        assert url not in text
    assert "s3cr3t" not in text


# --- alerts -----------------------------------------------------------------


def test_alert_posts_slack_compatible_text_with_fields(server, log_text):
    server.expect_request(HOOK_PATH, method="POST").respond_with_data("ok")
    url = server.url_for(HOOK_PATH)
    settings = Settings(alert_webhook_url=url)

    ok = notify.send_alert(
        settings,
        "portfolio-refresh aborted: symbol batch not complete by the deadline",
        job="portfolio-refresh",
        target_date=date(2026, 11, 24),
        exit_code=75,
        skipped=None,
    )

    assert ok is True
    (req,) = requests_of(server)
    assert req.method == "POST"
    assert req.path == HOOK_PATH
    assert req.query_string == b""
    assert req.headers["Content-Type"] == "application/json"
    assert json.loads(req.get_data()) == {
        "text": "portfolio-refresh aborted: symbol batch not complete by the deadline\n"
        "job: portfolio-refresh\n"
        "target_date: 2026-11-24\n"
        "exit_code: 75"
    }
    text = log_text()
    assert_no_secret(text, url)
    sent = [e for e in events(text) if e.get("event") == "notify.sent"]
    assert sent == [{"event": "notify.sent", "kind": "alert", "status": 200, "attempts": 1, "level": "debug", "timestamp": sent[0]["timestamp"]}]


def test_alert_is_a_no_op_without_a_webhook(server, log_text):
    assert notify.send_alert(Settings(), "anything", job="symbol-batch") is False
    assert requests_of(server) == []
    assert [e for e in events(log_text()) if e.get("level") == "warning"] == []


def test_alert_text_has_secrets_redacted(server):
    server.expect_request(HOOK_PATH).respond_with_data("ok")
    logs.register_secrets(["AVKEY-9f8e7d6c5b"])
    settings = Settings(alert_webhook_url=server.url_for(HOOK_PATH))

    assert notify.send_alert(settings, "provider refused key AVKEY-9f8e7d6c5b", url="https://x.test/q?apikey=abc123") is True

    (req,) = requests_of(server)
    assert json.loads(req.get_data()) == {"text": "provider refused key ***\nurl: https://x.test/q?apikey=***"}


# --- healthchecks.io pings ----------------------------------------------------


def test_ping_start_and_finish_follow_the_healthchecks_convention(server, log_text):
    server.expect_request(f"{PING_PATH}/start").respond_with_data("OK")
    server.expect_request(f"{PING_PATH}/0").respond_with_data("OK")
    server.expect_request(f"{PING_PATH}/75").respond_with_data("OK")
    base = server.url_for(PING_PATH)
    settings = Settings(healthcheck_url=base)
    summary = {"target_date": date(2026, 11, 24), "snapshots_created": 3, "portfolios_failed": 0}

    assert notify.ping_start(settings, RUN_ID) is True
    assert notify.ping_finish(settings, RUN_ID, 0, summary) is True
    assert notify.ping_finish(settings, RUN_ID, 75, {"reason": "symbol_batch_timeout"}) is True

    start, done, temp = requests_of(server)
    assert (start.method, start.path, start.query_string, start.get_data()) == ("POST", f"{PING_PATH}/start", f"rid={RID}".encode(), b"")
    assert (done.method, done.path, done.query_string) == ("POST", f"{PING_PATH}/0", f"rid={RID}".encode())
    assert done.headers["Content-Type"] == "application/json"
    assert done.get_data() == b'{"portfolios_failed": 0, "snapshots_created": 3, "target_date": "2026-11-24"}'
    assert (temp.path, temp.query_string, temp.get_data()) == (f"{PING_PATH}/75", f"rid={RID}".encode(), b'{"reason": "symbol_batch_timeout"}')
    assert_no_secret(log_text(), base)


def test_ping_keeps_the_base_query_and_ignores_a_trailing_slash(server):
    server.expect_request("/ping/KEY/symbol-batch/start").respond_with_data("OK")
    settings = Settings(healthcheck_url=server.url_for("/ping/KEY/symbol-batch/") + "?create=1")

    assert notify.ping_start(settings, RUN_ID) is True

    (req,) = requests_of(server)
    assert req.path == "/ping/KEY/symbol-batch/start"
    assert req.query_string == f"create=1&rid={RID}".encode()


def test_a_run_id_that_is_not_a_uuid_is_sent_as_is():
    assert notify.canonical_rid(RUN_ID) == RID
    assert notify.canonical_rid(RID.upper()) == RID
    assert notify.canonical_rid("manual-run-7") == "manual-run-7"


def test_ping_is_a_no_op_without_a_url(server):
    assert notify.ping_start(Settings(), RUN_ID) is False
    assert notify.ping_finish(Settings(), RUN_ID, 0, {}) is False
    assert requests_of(server) == []


# --- template (Cronitor-style) URLs --------------------------------------------


def test_template_url_gets_state_rid_and_exit_code(server):
    server.expect_request("/p/KEY/snapshotter-portfolio-refresh").respond_with_data("ok")
    tmpl = server.url_for("/p/KEY/snapshotter-portfolio-refresh") + "?state={state}&series={rid}&status_code={exit_code}"
    settings = Settings(healthcheck_url=tmpl)

    assert notify.ping_start(settings, RUN_ID) is True
    assert notify.ping_finish(settings, RUN_ID, 0, {"snapshots_created": 2}) is True
    assert notify.ping_finish(settings, RUN_ID, 1, {"portfolios_failed": 1}) is True

    start, ok, failed = requests_of(server)
    assert start.query_string == f"state=run&series={RID}".encode()  # empty status_code dropped
    assert start.get_data() == b""
    assert ok.query_string == f"state=complete&series={RID}&status_code=0".encode()
    assert ok.get_data() == b'{"snapshots_created": 2}'
    assert failed.query_string == f"state=fail&series={RID}&status_code=1".encode()
    assert {r.path for r in (start, ok, failed)} == {"/p/KEY/snapshotter-portfolio-refresh"}


def test_template_placeholders_in_the_path(server):
    server.expect_request(f"/hook/{RID}/fail/143").respond_with_data("ok")
    settings = Settings(healthcheck_url=server.url_for("/hook/{rid}/{state}/{exit_code}"))

    assert notify.ping_finish(settings, RUN_ID, 143, {}) is True
    (req,) = requests_of(server)
    assert (req.path, req.query_string) == (f"/hook/{RID}/fail/143", b"")


# --- failures: retried, bounded, swallowed, and silent about the URL ------------


def test_500_then_200_is_retried_and_succeeds(server, log_text):
    calls = []

    def handler(request):
        calls.append(request.get_data())
        return Response("boom", status=500) if len(calls) == 1 else Response("ok", status=200)

    server.expect_request(HOOK_PATH).respond_with_handler(handler)
    url = server.url_for(HOOK_PATH)

    assert notify.send_alert(Settings(alert_webhook_url=url), "job failed", exit_code=70) is True

    assert calls == [b'{"text": "job failed\\nexit_code: 70"}'] * 2
    text = log_text()
    assert [e for e in events(text) if e.get("level") == "warning"] == []
    assert [e["attempts"] for e in events(text) if e.get("event") == "notify.sent"] == [2]
    assert_no_secret(text, url)


def test_persistent_5xx_gives_up_after_the_attempts_and_logs_a_warning(server, log_text):
    server.expect_request(f"{PING_PATH}/1").respond_with_data("unavailable", status=503)
    base = server.url_for(PING_PATH)

    assert notify.ping_finish(Settings(healthcheck_url=base), RUN_ID, 1, {"failed": ["AAPL"]}) is False

    assert len(requests_of(server)) == 3
    text = log_text()
    (warning,) = [e for e in events(text) if e.get("level") == "warning"]
    assert (warning["event"], warning["kind"], warning["attempts"], warning["error"]) == ("notify.failed", "ping_finish", 3, "HTTP 503")
    assert_no_secret(text, base)


def test_a_4xx_is_not_retried(server, log_text):
    server.expect_request(HOOK_PATH).respond_with_data("no_service", status=404)
    url = server.url_for(HOOK_PATH)

    assert notify.send_alert(Settings(alert_webhook_url=url), "x") is False

    assert len(requests_of(server)) == 1
    (warning,) = [e for e in events(log_text()) if e.get("level") == "warning"]
    assert (warning["attempts"], warning["error"]) == (1, "HTTP 404")


def test_a_receiver_that_hangs_past_the_timeout_returns_quickly(server, log_text, monkeypatch):
    monkeypatch.setattr(notify, "POLICY", notify.Policy(timeout=0.3, attempts=2, backoff=0.01, budget=5.0))
    arrived, answered = [], []

    def hang(request):
        arrived.append(request.path)
        server.release.wait(30)  # set at teardown only: no answer can reach the client before it gives up
        answered.append(request.path)
        return Response("late", status=200)

    server.expect_request(f"{PING_PATH}/start").respond_with_handler(hang)
    base = server.url_for(PING_PATH)

    assert notify.ping_start(Settings(healthcheck_url=base), RUN_ID) is False
    assert answered == []  # it returned on its own timeout, without waiting for the receiver
    wait_until(lambda: len(arrived) == 2, what="both attempts at the receiver")  # both reached it and timed out
    text = log_text()
    (warning,) = [e for e in events(text) if e.get("level") == "warning"]
    assert (warning["kind"], warning["attempts"], warning["error"]) == ("ping_start", 2, "ReadTimeout: no answer within the timeout")
    assert_no_secret(text, base)


def test_an_unreachable_receiver_is_swallowed(log_text):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}{HOOK_PATH}"
    settings = Settings(alert_webhook_url=url, healthcheck_url=f"http://127.0.0.1:{port}{PING_PATH}")

    assert notify.send_alert(settings, "x") is False
    assert notify.ping_start(settings, RUN_ID) is False
    assert notify.ping_finish(settings, RUN_ID, 69, {"error": "db down"}) is False

    text = log_text()
    warnings = [e for e in events(text) if e.get("level") == "warning"]
    assert [(w["kind"], w["attempts"], w["error"]) for w in warnings] == [
        ("alert", 3, "ConnectError"),
        ("ping_start", 3, "ConnectError"),
        ("ping_finish", 3, "ConnectError"),
    ]
    assert_no_secret(text, url, settings.healthcheck_url)


def test_httpx_request_logs_do_not_carry_the_url(server, log_text):
    """httpx logs 'HTTP Request: POST <url>' at INFO; the URL is redacted there too."""
    server.expect_request(HOOK_PATH).respond_with_data("ok")
    url = server.url_for(HOOK_PATH)

    assert notify.send_alert(Settings(alert_webhook_url=url), "x") is True

    text = log_text()
    assert "HTTP Request: POST ***" in text
    assert_no_secret(text, url)


def test_template_urls_are_not_logged_either(server, log_text):
    server.expect_request("/p/s3cr3t-key/job").respond_with_data("ok")
    tmpl = server.url_for("/p/s3cr3t-key/job") + "?state={state}&series={rid}"

    assert notify.ping_start(Settings(healthcheck_url=tmpl), RUN_ID) is True

    text = log_text()
    assert "HTTP Request: POST ***" in text
    assert_no_secret(text, tmpl, server.url_for("/p/s3cr3t-key/job"))


def test_bad_urls_and_odd_summaries_never_raise(log_text):
    bad = Settings(alert_webhook_url="http://[::1", healthcheck_url="ht!tp://[bad")

    assert notify.send_alert(bad, "x") is False
    assert notify.ping_start(bad, RUN_ID) is False
    assert notify.ping_finish(bad, RUN_ID, 0, {"obj": object(), "id": uuid.UUID(RID)}) is False

    warnings = [e for e in events(log_text()) if e.get("level") == "warning"]
    assert [w["kind"] for w in warnings] == ["alert", "ping_start", "ping_finish"]
