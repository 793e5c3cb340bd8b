"""Prometheus metrics: the counters the RADIUS and PAM fronts increment, and the `/metrics` server.

The metrics are module-level (like `logging` loggers): a front imports this module and calls
`observe(...)` or `DROPPED.labels(...).inc()` whether or not `[metrics] listen` is set; serving
them is `start_http(cfg.metrics.listen, cfg)`, which returns a handle to stop the server.

Labels are bounded sets taken from the config (RADIUS client names, PAM service names) and fixed
vocabularies (results, reasons, causes). Never a user name: one time series per user would grow
without bound, and the metrics endpoint is not the place to list who logs in.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
import time

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY

from . import hostport
from .logsetup import RateLimitedLog

log = logging.getLogger("mfa_radius.metrics")

# `_created` series double every counter's output for no use on a dashboard.
prometheus_client.disable_created_metrics()

# Authentication latency is dominated by PAM password checks (a password hash; pam_unix's fail
# delay of about two seconds on a failure) and SMS gateways; the buckets reach past both.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

BUILD_INFO = Gauge("mfa_radius_build_info", "Version of the running mfa-radius (always 1)",
                   ["version"])
BUILD_INFO.labels(importlib.metadata.version("mfa-radius")).set(1)

REQUESTS = Counter(
    "mfa_radius_requests", "Authentication requests answered, by front (radius, pam), client "
    "(RADIUS client name or PAM service) and result (accept, reject, challenge); Status-Server "
    "probes are counted apart (mfa_radius_status_server_total)",
    ["front", "client", "result"])
REASONS = Counter(
    "mfa_radius_decisions", "Verifier decisions by front and reason (ok, bad_code, replay, locked, "
    "no_device, ...)", ["front", "reason"])
LATENCY = Histogram(
    "mfa_radius_request_duration_seconds", "Time from request received to reply sent, by front",
    ["front"], buckets=LATENCY_BUCKETS)
DUPLICATES = Counter(
    "mfa_radius_radius_duplicates", "RADIUS retransmits answered from the reply cache (or dropped "
    "while the first copy was in progress), by client", ["client"])
DROPPED = Counter(
    "mfa_radius_dropped", "Requests dropped without an answer, by front and cause (unknown_client, "
    "wrong_secret, missing_message_authenticator, malformed, unauthorised_caller, "
    "overload, store_unavailable, ...)", ["front", "cause"])
STATUS_SERVER = Counter(
    "mfa_radius_status_server", "RADIUS Status-Server probes answered (health checks of "
    "appliances and proxies, not logins), by client", ["client"])
SMS_SENT = Counter("mfa_radius_sms_sent", "SMS codes handed to a gateway, by gateway", ["gateway"])
SMS_FAILURES = Counter("mfa_radius_sms_failures", "SMS gateway errors (the next gateway is tried), "
                       "by gateway", ["gateway"])
SMS_UNDELIVERED = Counter("mfa_radius_sms_undelivered", "SMS codes no gateway took")
RELOADS = Counter("mfa_radius_config_reloads", "SIGHUP reloads, by result (ok, refused)",
                  ["result"])
AUDIT_PRUNED = Counter("mfa_radius_audit_pruned_rows", "Audit rows deleted by housekeeping")
UNOPENABLE = Gauge("mfa_radius_unopenable_devices", "Assigned devices left out because their "
                   "seed does not open with the key file (their codes are refused), as last read")
LAST_RELOAD = Gauge("mfa_radius_config_last_reload_success_timestamp_seconds",
                    "Unix time of the last config load that was taken (start or reload)")


def watch_verifier(verifier) -> None:
    """Read the verifier's own counts (unopenable devices) at scrape time."""
    UNOPENABLE.set_function(lambda: verifier.unopenable_devices)


def observe(front: str, client: str, result: str, reason: str, seconds: float) -> None:
    """Record one answered request: its result, the verifier's reason and its latency."""
    REQUESTS.labels(front, client, result).inc()
    REASONS.labels(front, reason).inc()
    LATENCY.labels(front).observe(seconds)


def status_server(client: str) -> None:
    """Record one Status-Server probe answered (RFC 5997)."""
    STATUS_SERVER.labels(client).inc()


def drop(front: str, cause: str) -> None:
    DROPPED.labels(front, cause).inc()


def sms_event(event: str, gateway: str) -> None:
    """The `on_event` hook of sms.gateways.SmsSender: "sent", "gateway_error", "failed"."""
    if event == "sent":
        SMS_SENT.labels(gateway).inc()
    elif event == "gateway_error":
        SMS_FAILURES.labels(gateway).inc()
    elif event == "failed":
        SMS_UNDELIVERED.inc()


class StoreCollector:
    """Gauges read from the database at scrape time: locked users, enrolled users, devices.

    Scrapes run in the HTTP server's threads, while the Verifier's connection belongs to the event
    loop, so this collector has its own connection (a WAL reader never blocks the writers).
    """

    def __init__(self):
        self.config = None  # None: nothing to read (no server started), no gauges
        self._store = None
        self._lock = threading.Lock()
        # Prometheus scrapes every 15 s or so: a missing database is one line a minute, not four.
        self._errors = RateLimitedLog(log, per_seconds=60.0, burst=1)

    def set_config(self, config) -> None:
        """Read from this config's database from the next scrape on (None: stop reading)."""
        with self._lock:
            if (config is None or self.config is None
                    or config.storage != self.config.storage):
                self.close_locked()
            self.config = config

    def describe(self):
        # Describing without reading: registering must not open the database.
        return [GaugeMetricFamily("mfa_radius_database_up", ""),
                GaugeMetricFamily("mfa_radius_locked_users", ""),
                GaugeMetricFamily("mfa_radius_enrolled_users", ""),
                GaugeMetricFamily("mfa_radius_devices", "", labels=["state"])]

    def collect(self):
        with self._lock:
            if self.config is None:
                return
            try:
                if self._store is None:
                    from .state import open_store

                    self._store = open_store(self.config)
                counts = self._store.gauge_counts(time.time())
            except Exception as exc:  # a scrape must never kill the server thread
                self._errors.warning("db", "metrics: cannot read the database: %s", exc)
                self.close_locked()
                yield _database_up(0)
                return
        yield _database_up(1)
        yield GaugeMetricFamily("mfa_radius_locked_users", "Users locked out now (too many wrong "
                                "codes)", value=counts["locked_users"])
        yield GaugeMetricFamily("mfa_radius_enrolled_users", "Users holding at least one device",
                                value=counts["enrolled_users"])
        devices = GaugeMetricFamily("mfa_radius_devices", "Devices by state (assigned, unassigned)",
                                    labels=["state"])
        devices.add_metric(["assigned"], counts["devices_assigned"])
        devices.add_metric(["unassigned"], counts["devices_unassigned"])
        yield devices

    def close_locked(self) -> None:
        if self._store is not None:
            try:
                self._store.close()
            except Exception:
                pass
            self._store = None


def _database_up(value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily("mfa_radius_database_up", "1 when this scrape could read the "
                             "database, 0 when it could not (down, unreachable, refused)",
                             value=value)


STORE_GAUGES = StoreCollector()
REGISTRY.register(STORE_GAUGES)


def reconfigure(config) -> None:
    """After a reload: the database gauges follow a changed [storage] section."""
    if STORE_GAUGES.config is not None:
        STORE_GAUGES.set_config(config)


class MetricsServer:
    """The running `/metrics` HTTP server (a daemon thread); `close()` stops it."""

    def __init__(self, httpd, thread):
        self._httpd = httpd
        self._thread = thread
        self.host, self.port = httpd.server_address[:2]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        STORE_GAUGES.set_config(None)


def start_http(listen: str, config=None) -> MetricsServer | None:
    """Serve `/metrics` on `listen` ("HOST:PORT"; "" = disabled, returns None).

    With `config`, the database gauges (locked users, ...) are read from its database at scrape
    time. Raises OSError when the address cannot be bound (the daemon logs it and serves on).
    """
    if not listen:
        return None
    # ":PORT" asks for every address.
    where = hostport.parse(listen, any_host="0.0.0.0", any_port=True)  # noqa: S104
    httpd, thread = prometheus_client.start_http_server(where.port, addr=where.host)
    STORE_GAUGES.set_config(config)
    server = MetricsServer(httpd, thread)
    log.info("metrics on %s", server.url)
    return server
