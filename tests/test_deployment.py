"""The deployment files: Railway config-as-code, crontab, Kubernetes CronJobs, Dockerfile.

The schedules are checked by expanding them over a whole year (2026, both EDT and
EST) and asking the questions that matter: does every NYSE trading day get a run
of each job after its close, does that run pick that very day
(effective_trading_date), and does nothing run at a time that would pick the
wrong day?
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from snapshotter.core.calendar import NEW_YORK, close_time, effective_trading_date, is_trading_day, trading_days_between
from snapshotter.core.durations import parse_duration
from snapshotter.jobs.snapshots import Options
from snapshotter.jobs.symbol_batch import MAX_RUNTIME_S

ROOT = Path(__file__).resolve().parent.parent
UTC = timezone.utc
YEAR = 2026
JOBS = ("symbol-batch", "portfolio-refresh")
# Exit codes after which Kubernetes starts no new pod: a pod started seconds later cannot
# change them (75 means "rerun later": the later run is the next one on the schedule).
FAIL_JOB = {1, 64, 65, 75, 78}
# The Kubernetes versions the manifests are validated against: the oldest the README
# claims (1.27, timeZone) and the newest kubernetes-validate ships.
K8S_OLDEST, K8S_NEWEST = "1.27", "1.37"
K8S_FILES = ("scripts/k8s/cronjob.yaml", "scripts/k8s/db-upgrade-job.yaml")
MAX_RUNTIME = {"symbol-batch": MAX_RUNTIME_S, "portfolio-refresh": Options().max_runtime_s}  # the commands' defaults

# Keys documented in Railway's config-as-code reference (docs.railway.com/config-as-code/reference).
# The JSON schema behind https://railway.com/railway.schema.json could not be fetched here,
# so the files are checked against these documented names and values instead.
RAILWAY_TOP = {"$schema", "build", "deploy", "environments"}
RAILWAY_BUILD = {
    "builder", "watchPatterns", "buildCommand", "dockerfilePath", "railpackVersion",
    "nixpacksConfigPath", "nixpacksPlan", "nixpacksVersion",
}
RAILWAY_DEPLOY = {
    "startCommand", "preDeployCommand", "multiRegionConfig", "numReplicas", "healthcheckPath",
    "healthcheckTimeout", "restartPolicyType", "restartPolicyMaxRetries", "cronSchedule",
    "overlapSeconds", "drainingSeconds", "sleepApplication", "region",
}
RAILWAY_BUILDERS = {"RAILPACK", "DOCKERFILE", "NIXPACKS"}
RAILWAY_RESTART = {"ON_FAILURE", "ALWAYS", "NEVER"}
RAILWAY_FILES = {"symbol-batch": ROOT / "railway.json", "portfolio-refresh": ROOT / "scripts/railway/portfolio-refresh.json"}


# --- a small 5-field cron expander (minute hour day-of-month month day-of-week) ---

FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def _field(text: str, lo: int, hi: int) -> tuple[set[int], bool]:
    """Values of one field and whether it is restricted (not '*')."""
    values: set[int] = set()
    for part in text.split(","):
        rng, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            a, b = (int(x) for x in rng.split("-"))
        else:
            a = b = int(rng)
            if step_text:
                b = hi
        if not (lo <= a <= b <= hi) or step < 1:
            raise ValueError(f"bad cron field {text!r}")
        values.update(range(a, b + 1, step))
    return values, not text.startswith("*")


class Cron:
    def __init__(self, expr: str):
        parts = expr.split()
        if len(parts) != 5:
            raise ValueError(f"not a 5-field cron expression: {expr!r}")
        (self.minutes, _), (self.hours, _), (self.doms, self.dom_set), (self.months, _), (dows, self.dow_set) = (
            _field(p, lo, hi) for p, (lo, hi) in zip(parts, FIELDS)
        )
        self.dows = {d % 7 for d in dows}  # 0 and 7 are Sunday

    def day_matches(self, d: date) -> bool:
        dow = d.isoweekday() % 7
        if d.month not in self.months:
            return False
        if self.dom_set and self.dow_set:  # Vixie cron: either restricted field may match
            return d.day in self.doms or dow in self.dows
        return d.day in self.doms and dow in self.dows

    def runs(self, start: date, end: date, tz) -> list[datetime]:
        """Every firing in [start, end] as aware UTC datetimes, the schedule read in ``tz``."""
        out = []
        d = start
        while d <= end:
            if self.day_matches(d):
                for h in sorted(self.hours):
                    for m in sorted(self.minutes):
                        out.append(datetime.combine(d, time(h, m), tzinfo=tz).astimezone(UTC))
            d += timedelta(days=1)
        return out


def year_runs(expr: str, tz=UTC) -> list[datetime]:
    # a few days past New Year so that Dec 31's close has its runs too
    return Cron(expr).runs(date(YEAR, 1, 1), date(YEAR + 1, 1, 7), tz)


def test_cron_expander_itself():
    c = Cron("15 1,2 * * 2-6")
    runs = c.runs(date(2026, 7, 6), date(2026, 7, 12), UTC)  # Mon..Sun
    assert [r.strftime("%a %H:%M") for r in runs] == [
        f"{day} {hm}" for day in ("Tue", "Wed", "Thu", "Fri", "Sat") for hm in ("01:15", "02:15")
    ]
    assert Cron("*/20 0 1 1 *").runs(date(2026, 1, 1), date(2026, 1, 2), UTC) == [
        datetime(2026, 1, 1, 0, m, tzinfo=UTC) for m in (0, 20, 40)
    ]
    assert Cron("0 9 * * 7").day_matches(date(2026, 7, 12))  # 7 is Sunday too
    assert Cron("0 0 13 * 5").day_matches(date(2026, 2, 13)) and Cron("0 0 13 * 5").day_matches(date(2026, 2, 20))
    with pytest.raises(ValueError):
        Cron("61 * * * *")


def assert_each_trading_day_is_covered(runs: list[datetime], job: str) -> None:
    """Every NYSE trading day of YEAR gets a run after its close, within 6 hours of 16:00
    New York time, that picks that very day. Half days close at 13:00, so their runs come
    later than 6 hours after the actual close; the regular 16:00 is the yardstick."""
    for d in trading_days_between(date(YEAR, 1, 1), date(YEAR, 12, 31)):
        regular_close = datetime.combine(d, time(16, 0), tzinfo=NEW_YORK)
        hits = [t for t in runs if close_time(d) <= t <= regular_close + timedelta(hours=6)]
        assert hits, f"{job}: no run within 6 h after the close of {d}"
        assert any(effective_trading_date(t) == d for t in hits), f"{job}: runs after {d} pick another day"


def assert_runs_fall_in_the_new_york_evening(runs: list[datetime], job: str) -> None:
    """Every run falls after 16:00 New York time of its New York day; when that day is a
    trading day, the run does that day (never a stale one, never one whose close is ahead)."""
    for t in runs:
        local = t.astimezone(NEW_YORK)
        assert local.time() >= time(16, 0), f"{job}: {local} is before the close"
        if is_trading_day(local.date()):
            assert effective_trading_date(t) == local.date(), f"{job}: {local} does not pick its own day"


# --- Railway ---------------------------------------------------------------------


def railway(job: str) -> dict:
    return json.loads(RAILWAY_FILES[job].read_text())


@pytest.mark.parametrize("job", JOBS)
def test_railway_config_uses_only_documented_keys_and_values(job):
    cfg = railway(job)
    assert cfg["$schema"] == "https://railway.com/railway.schema.json"
    assert "crons" not in cfg  # Railway has no such key: one cron schedule per service
    assert set(cfg) <= RAILWAY_TOP
    assert set(cfg["build"]) <= RAILWAY_BUILD
    assert set(cfg["deploy"]) <= RAILWAY_DEPLOY
    assert cfg["build"]["builder"] in RAILWAY_BUILDERS
    if cfg["build"]["builder"] == "DOCKERFILE":
        assert (ROOT / cfg["build"]["dockerfilePath"]).is_file()
    deploy = cfg["deploy"]
    assert deploy["restartPolicyType"] in RAILWAY_RESTART
    # a cron job must not be restarted forever: NEVER, or ON_FAILURE with a small bound
    assert deploy["restartPolicyType"] != "ALWAYS"
    if deploy["restartPolicyType"] == "ON_FAILURE":
        assert isinstance(deploy.get("restartPolicyMaxRetries"), int) and 1 <= deploy["restartPolicyMaxRetries"] <= 3
    assert isinstance(deploy["cronSchedule"], str)


@pytest.mark.parametrize("job", JOBS)
def test_railway_start_command_runs_the_job(job):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    argv = shlex.split(railway(job)["deploy"]["startCommand"])
    assert argv == ["snapshotter", job]
    assert argv[0] in scripts  # the console script pip installs


@pytest.mark.parametrize("job", JOBS)
def test_railway_migrates_before_each_deployment(job):
    """deploy.preDeployCommand (documented as a list of commands): the new image migrates the
    schema after the build and before the deployment; the jobs then run with --no-migrate."""
    pre = railway(job)["deploy"]["preDeployCommand"]
    assert isinstance(pre, list) and all(isinstance(c, str) for c in pre)
    assert [shlex.split(c) for c in pre] == [["snapshotter", "db", "upgrade"]]


def test_railway_services_share_the_build():
    assert railway("symbol-batch")["build"] == railway("portfolio-refresh")["build"]


@pytest.mark.parametrize("job", JOBS)
def test_railway_schedule_fires_only_tuesday_to_saturday_between_01_and_03_utc(job):
    runs = year_runs(railway(job)["deploy"]["cronSchedule"])
    assert runs
    assert {t.isoweekday() for t in runs} == {2, 3, 4, 5, 6}
    assert all(time(1, 0) <= t.time() < time(3, 0) for t in runs)
    assert {t.hour for t in runs} == {1, 2}  # one run after the close in EDT and in EST


@pytest.mark.parametrize("job", JOBS)
def test_railway_schedule_covers_every_trading_day_of_the_year(job):
    runs = year_runs(railway(job)["deploy"]["cronSchedule"])
    assert_each_trading_day_is_covered(runs, job)
    assert_runs_fall_in_the_new_york_evening(runs, job)


@pytest.mark.parametrize("month, tzname", [(1, "EST"), (7, "EDT")])
def test_railway_runs_fall_in_the_new_york_evening_in_both_seasons(month, tzname):
    for job in JOBS:
        runs = [t for t in year_runs(railway(job)["deploy"]["cronSchedule"]) if t.month == month]
        local = [t.astimezone(NEW_YORK) for t in runs]
        assert {t.tzname() for t in local} == {tzname}
        assert all(time(20, 0) <= t.time() < time(23, 0) for t in local), job


def test_railway_schedules_respect_the_five_minute_rule():
    """Railway rejects schedules with two runs less than 5 minutes apart."""
    for job in JOBS:
        runs = year_runs(railway(job)["deploy"]["cronSchedule"])
        assert min(b - a for a, b in zip(runs, runs[1:])) >= timedelta(minutes=5)


def test_portfolio_refresh_starts_after_the_symbol_batch_each_night():
    batch = year_runs(railway("symbol-batch")["deploy"]["cronSchedule"])
    refresh = year_runs(railway("portfolio-refresh")["deploy"]["cronSchedule"])
    for t in refresh:
        assert any(timedelta(minutes=15) <= t - s <= timedelta(hours=1) for s in batch), t


# --- crontab ---------------------------------------------------------------------

ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
BACKSTOP = timedelta(minutes=10)  # the outside limit comes this long after the job's own --max-runtime


def crontab_entries() -> tuple[dict[str, str], dict[str, tuple[str, list[str]]]]:
    """Environment lines, and per command (``symbol-batch``, ``db upgrade``) its schedule and argv."""
    env, jobs = {}, {}
    for line in (ROOT / "scripts/crontab.example").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if ENV_LINE.match(line):
            k, _, v = line.partition("=")
            env[k] = v
            continue
        fields = line.split(None, 5)
        argv = shlex.split(fields[5])
        inner = argv[argv.index("-c") + 1].split("; ")[-1]  # sh -c '...; exec .../snapshotter ARGS'
        jobs[inner.split("/bin/snapshotter ", 1)[1]] = (" ".join(fields[:5]), argv)
    return env, jobs


def parse_timeout(argv: list[str]) -> tuple[timedelta, timedelta]:
    """(duration, kill-after) of the ``timeout --kill-after=K DURATION`` wrapper."""
    i = argv.index("timeout")
    kill = argv[i + 1]
    assert kill.startswith("--kill-after=")
    return (timedelta(seconds=parse_duration(argv[i + 2])), timedelta(seconds=parse_duration(kill.partition("=")[2])))


def test_crontab_lines_are_utc_without_cron_tz():
    env, _ = crontab_entries()
    assert "CRON_TZ" not in env and "TZ" not in env
    assert "CRON_TZ=" not in (ROOT / "scripts/crontab.example").read_text()


def test_crontab_runs_every_command_under_flock_and_timeout():
    _, jobs = crontab_entries()
    assert set(jobs) == {*JOBS, "db upgrade"}
    locks = set()
    for job, (schedule, argv) in jobs.items():
        assert argv[:4] == ["flock", "-n", "-E", "75"]  # a held lock skips the run with EX_TEMPFAIL
        lock = argv[4]
        assert lock.endswith(".lock") and not lock.startswith("/tmp/")
        locks.add(lock)
        assert argv[5] == "timeout"  # a run that hangs must not hold the lock for ever
        limit, kill_after = parse_timeout(argv)
        assert timedelta(0) < kill_after <= timedelta(minutes=5)
        if job in JOBS:  # the job stops itself first (exit 75); timeout is the backstop
            assert limit == timedelta(seconds=MAX_RUNTIME[job]) + BACKSTOP
        else:
            assert limit <= timedelta(hours=1)
        assert argv[8:10] == ["sh", "-c"]
        assert re.fullmatch(rf"exec /\S*/bin/snapshotter {job}", argv[10].split("; ")[-1])
        assert argv[11:] == [f">>/var/log/snapshotter/{job.replace(' ', '-')}.log", "2>&1"]
        # only the migration reads the owner's credentials
        assert ("migrate.env" in argv[10]) == (job == "db upgrade")
        if job in JOBS:  # the same UTC schedule as the Railway service of that job
            assert schedule == railway(job)["deploy"]["cronSchedule"]
    assert len(locks) == 3


def test_crontab_migrates_before_each_night_s_first_symbol_batch():
    _, jobs = crontab_entries()
    upgrades = year_runs(jobs["db upgrade"][0])
    batches = year_runs(jobs["symbol-batch"][0])
    nights: dict[date, list[datetime]] = {}
    for t in batches:
        nights.setdefault(t.date(), []).append(t)
    assert {t.date() for t in upgrades} == set(nights)
    for t in upgrades:
        assert timedelta(minutes=5) <= min(nights[t.date()]) - t <= timedelta(minutes=30)


def test_crontab_schedules_cover_every_trading_day():
    _, jobs = crontab_entries()
    for job in JOBS:
        runs = year_runs(jobs[job][0])
        assert {t.isoweekday() for t in runs} == {2, 3, 4, 5, 6}
        assert_each_trading_day_is_covered(runs, job)
        assert_runs_fall_in_the_new_york_evening(runs, job)


# --- Kubernetes ------------------------------------------------------------------


def k8s_docs(path: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / path).read_text()) if d]


def cronjobs() -> dict[str, dict]:
    docs = k8s_docs("scripts/k8s/cronjob.yaml")
    assert all(d["apiVersion"] == "batch/v1" and d["kind"] == "CronJob" for d in docs)
    return {d["metadata"]["name"].removeprefix("snapshotter-"): d for d in docs}


def test_kubernetes_validate_ships_the_versions_the_readme_names():
    from kubernetes_validate import utils

    shipped = {utils.major_minor(v) for v in utils.all_versions()}
    assert {K8S_OLDEST, K8S_NEWEST} <= shipped
    assert utils.major_minor(utils.latest_version()) == K8S_NEWEST  # a newer package: validate against it, update README
    readme = (ROOT / "README.md").read_text()
    assert f"Kubernetes {K8S_OLDEST} and {K8S_NEWEST} API schemas" in readme


@pytest.mark.parametrize("version", [K8S_OLDEST, K8S_NEWEST])
@pytest.mark.parametrize("path", K8S_FILES)
def test_k8s_manifests_pass_the_api_schemas(path, version):
    """Strict JSON-schema validation (unknown fields rejected) against the API of the oldest
    Kubernetes the README claims and the newest the validator ships."""
    from kubernetes_validate import utils

    docs = k8s_docs(path)
    assert docs
    for doc in docs:
        try:
            assert utils.validate(doc, version, strict=True) == version
        except utils.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{path} {doc['metadata']['name']} on Kubernetes {version}: {where}: {exc.message}")


def test_k8s_validation_catches_the_policy_that_1_27_to_1_34_reject():
    """The form this file had before: a condition without status (kubernetes#131512) and an
    exit-code rule without onPodConditions (required by the 1.27-1.29 schemas)."""
    from kubernetes_validate import utils

    doc = cronjobs()["symbol-batch"]
    rules = doc["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    rules[1]["onPodConditions"] = [{"type": "DisruptionTarget"}]
    for version in ("1.31", "1.34"):
        with pytest.raises(utils.ValidationError, match="'status' is a required property"):
            utils.validate(doc, version, strict=True)
    utils.validate(doc, "1.35", strict=True)
    del rules[0]["onPodConditions"]
    with pytest.raises(utils.ValidationError, match="'onPodConditions' is a required property"):
        utils.validate(doc, K8S_OLDEST, strict=True)


def test_k8s_has_one_cronjob_per_job():
    assert set(cronjobs()) == set(JOBS)


def pod_failure_rules(job_spec: dict, container: dict) -> tuple[dict, list[dict]]:
    rules = job_spec["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob" and "onExitCodes" in r]
    assert len(fail) == 1
    codes = fail[0]["onExitCodes"]
    assert codes["operator"] == "In"
    assert codes["values"] == sorted(set(codes["values"])) and 0 not in codes["values"]  # the API's own rules
    assert codes.get("containerName", container["name"]) == container["name"]
    assert fail[0].get("onPodConditions", []) == []  # both in one rule is invalid; [] is "unused"
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    # a FailJob rule must come before any rule that could match the same pod first
    assert rules.index(fail[0]) == 0
    return fail[0], rules


def assert_hardened_pod(pod: dict) -> None:
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
    assert pod["automountServiceAccountToken"] is False  # no API token in a pod that never uses it
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "command" not in container  # the image's ENTRYPOINT is snapshotter


@pytest.mark.parametrize("job", JOBS)
def test_k8s_cronjob_spec(job):
    spec = cronjobs()[job]["spec"]
    assert spec["timeZone"] == "America/New_York"
    ZoneInfo(spec["timeZone"])
    assert spec["concurrencyPolicy"] == "Forbid"
    assert isinstance(spec["startingDeadlineSeconds"], int) and 600 <= spec["startingDeadlineSeconds"] <= 6 * 3600

    job_spec = spec["jobTemplate"]["spec"]
    assert isinstance(job_spec["backoffLimit"], int) and 0 <= job_spec["backoffLimit"] <= 3
    # the job stops itself after its --max-runtime (exit 75); the deadline is the backstop
    assert job_spec["activeDeadlineSeconds"] == MAX_RUNTIME[job] + BACKSTOP.total_seconds()
    pod = job_spec["template"]["spec"]
    assert_hardened_pod(pod)
    assert pod["terminationGracePeriodSeconds"] >= 60
    (container,) = pod["containers"]
    assert container["args"] == [job]
    fail, _rules = pod_failure_rules(job_spec, container)
    assert set(fail["onExitCodes"]["values"]) == FAIL_JOB


def test_k8s_runs_each_job_twice_a_night_an_hour_apart():
    """75 is not retried in a new pod: the second run of the night, an hour later, is the retry."""
    for job, cj in cronjobs().items():
        runs = year_runs(cj["spec"]["schedule"], NEW_YORK)
        nights: dict[date, list[datetime]] = {}
        for t in runs:
            nights.setdefault(t.astimezone(NEW_YORK).date(), []).append(t)
        assert {len(v) for v in nights.values()} == {2}, job
        assert {b - a for a, b in nights.values()} == {timedelta(hours=1)}, job


@pytest.mark.parametrize("job", JOBS)
def test_k8s_secrets_come_from_a_secret(job):
    container = cronjobs()[job]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    secret_names = {"DATABASE_URL", "ALPHAVANTAGE_API_KEY", "POLYGON_API_KEY", "ALERT_WEBHOOK_URL", "HEALTHCHECK_URL", "PUSHGATEWAY_URL"}
    assert "DATABASE_URL" in env
    for name in secret_names & set(env):
        assert "value" not in env[name], name
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "snapshotter"
    if job == "symbol-batch":
        assert {"ALPHAVANTAGE_API_KEY", "POLYGON_API_KEY"} <= set(env)
    assert "optional" not in env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]


@pytest.mark.parametrize("job", JOBS)
def test_k8s_jobs_run_in_production_mode_without_migrating(job):
    container = cronjobs()[job]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["SNAPSHOTTER_ENV"] == {"name": "SNAPSHOTTER_ENV", "value": "production"}  # --no-migrate by default


def test_k8s_db_upgrade_job_migrates_with_the_owner_secret():
    (doc,) = k8s_docs("scripts/k8s/db-upgrade-job.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("batch/v1", "Job")
    spec = doc["spec"]
    pod = spec["template"]["spec"]
    assert_hardened_pod(pod)
    (container,) = pod["containers"]
    assert container["args"] == ["db", "upgrade"]
    ref = {e["name"]: e for e in container["env"]}["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] != "snapshotter" and "optional" not in ref  # the owner's URL: never in the nightly pods
    fail, _rules = pod_failure_rules(spec, container)
    assert set(fail["onExitCodes"]["values"]) == {64, 78}
    assert 0 < spec["activeDeadlineSeconds"] <= 3600 and spec["ttlSecondsAfterFinished"] > 0
    images = {cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] for cj in cronjobs().values()}
    assert images == {container["image"]}


@pytest.mark.parametrize("job", JOBS)
def test_k8s_schedule_covers_every_trading_day(job):
    spec = cronjobs()[job]["spec"]
    runs = year_runs(spec["schedule"], ZoneInfo(spec["timeZone"]))
    assert {t.astimezone(NEW_YORK).isoweekday() for t in runs} == {1, 2, 3, 4, 5}
    assert_each_trading_day_is_covered(runs, job)
    assert_runs_fall_in_the_new_york_evening(runs, job)


def test_k8s_portfolio_refresh_runs_after_the_symbol_batch():
    jobs = cronjobs()
    batch, refresh = (year_runs(jobs[j]["spec"]["schedule"], NEW_YORK) for j in JOBS)
    assert all(timedelta(minutes=15) <= r - b <= timedelta(hours=1) for b, r in zip(batch, refresh))


# --- Docker ------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instr, _, rest = line.partition(" ")
            out.append((instr.upper(), rest.strip()))
    return out


def test_dockerfile_installs_the_locked_dependencies_before_the_source_and_runs_as_non_root():
    instrs = dockerfile()
    froms = [rest for i, rest in instrs if i == "FROM"]
    assert froms == ["python:3.11-slim"] or froms == ["python:3.12-slim"]
    copies = [(n, rest) for n, (i, rest) in enumerate(instrs) if i == "COPY"]
    runs = [(n, rest) for n, (i, rest) in enumerate(instrs) if i == "RUN"]
    first_copy = copies[0][1].split()
    assert set(first_copy[:-1]) == {"pyproject.toml", "requirements.lock"}  # what the dependency layer depends on
    source_at = min(n for n, rest in copies if rest.split()[0] == "snapshotter")
    (deps_at, deps), = [(n, rest) for n, rest in runs if "-c /src/requirements.lock" in rest]
    assert copies[0][0] < deps_at < source_at  # dependencies first: a code change does not reinstall them
    assert re.search(r"pip install -c /src/requirements.lock -r \S+ setuptools", deps)
    assert "['project']['dependencies']" in deps  # the runtime dependencies only, not the test extras
    (pkg,) = [rest for n, rest in runs if n > source_at]
    assert re.search(r"pip install --no-deps --no-build-isolation /src\b", pkg)  # nothing resolved after the lock
    copied = " ".join(rest for _, rest in copies)
    for needed in ("pyproject.toml", "README.md", "snapshotter", "requirements.lock"):
        assert needed in copied  # pyproject names README.md as the readme
    users = [rest for i, rest in instrs if i == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert json.loads(dict(instrs)["ENTRYPOINT"]) == ["snapshotter"]


def locked() -> dict[str, tuple[str, str | None]]:
    """name -> (version, marker) of requirements.lock; every line pins one version."""
    out = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        req, _, marker = line.partition(";")
        name, sep, version = req.strip().partition("==")
        assert sep and re.fullmatch(r"[A-Za-z0-9._-]+", name) and re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), line
        out[canonicalize_name(name)] = (version, marker.strip() or None)
    return out


def test_the_lock_pins_every_dependency_pyproject_names():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*project["project"]["dependencies"], *project["project"]["optional-dependencies"]["test"],
              *project["build-system"]["requires"]]
    pins = locked()
    for spec in wanted:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{spec} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name][0], prereleases=True), f"{spec} but the lock pins {pins[name][0]}: run `make lock`"
    for extra_pkg in ("psycopg-binary",):  # psycopg[binary]: the extra's package is pinned too
        assert extra_pkg in pins


def test_this_environment_is_the_lock():
    """`make install` installs with the lock as constraints: what runs the tests is what the image gets."""
    from importlib.metadata import PackageNotFoundError, version

    for name, (pinned, marker) in locked().items():
        if marker and not Marker(marker).evaluate():
            continue
        try:
            installed = version(name)
        except PackageNotFoundError:
            if name in {"setuptools", "uv"}:  # the build backend: only the image installs it outright
                continue
            raise
        if name == "setuptools":
            continue  # a venv's own setuptools, if any, is not the package's business
        assert installed == pinned, f"{name} {installed} installed, the lock pins {pinned}: run `make install`"


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "*.db", ".env", "tests"} <= ignored
    assert not {"snapshotter", "pyproject.toml", "README.md", "requirements.lock"} & ignored
