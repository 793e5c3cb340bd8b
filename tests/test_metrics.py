"""/metrics: a real HTTP server on a loopback port, scraped with urllib and parsed."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pyotp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mfa_radius import config as config_mod
from mfa_radius import hostport
from mfa_radius import metrics
from mfa_radius.errors import ConfigError
from mfa_radius.verifier import Attempt, Verifier
from conftest import write_config


def scrape(server) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(server.url, timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


@pytest.fixture
def server(cfg):
    srv = metrics.start_http("127.0.0.1:0", cfg)
    yield srv
    srv.close()


def test_disabled_when_listen_is_empty(cfg):
    assert metrics.start_http("", cfg) is None


def test_counters_histogram_and_store_gauges(server, cfg, devices):
    info = devices.create_virtual("S1")
    totp = pyotp.TOTP(info["secret"])
    now = time.time()
    devices.enable("alice", "S1", totp.at(now - 30), totp.at(now))
    devices.create_virtual("S2")
    verifier = Verifier.open(cfg)
    for _ in range(cfg.policy.lockout_failures):
        verifier.verify(Attempt("bob-has-none", "000000", "test"))
    # bob has no device: "no_device" is no failure; lock alice instead with wrong codes.
    for _ in range(cfg.policy.lockout_failures):
        verifier.verify(Attempt("alice", "000000", "test", now=now + 60))
    verifier.store.close()

    before = scrape(server)
    metrics.observe("radius", "vpn1", "accept", "ok", 0.02)
    metrics.observe("radius", "vpn1", "reject", "bad_code", 0.3)
    metrics.observe("pam", "sshd", "accept", "ok", 0.004)
    metrics.DUPLICATES.labels("vpn1").inc()
    metrics.drop("radius", "unknown_client")
    metrics.sms_event("gateway_error", "twilio")
    metrics.sms_event("sent", "twilio")
    metrics.sms_event("failed", "")
    after = scrape(server)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert delta("mfa_radius_requests_total", front="radius", client="vpn1", result="accept") == 1
    assert delta("mfa_radius_requests_total", front="radius", client="vpn1", result="reject") == 1
    assert delta("mfa_radius_requests_total", front="pam", client="sshd", result="accept") == 1
    assert delta("mfa_radius_decisions_total", front="radius", reason="bad_code") == 1
    assert delta("mfa_radius_request_duration_seconds_count", front="radius") == 2
    assert delta("mfa_radius_request_duration_seconds_bucket", front="radius", le="0.025") == 1
    assert delta("mfa_radius_request_duration_seconds_bucket", front="radius", le="0.5") == 2
    assert delta("mfa_radius_radius_duplicates_total", client="vpn1") == 1
    assert delta("mfa_radius_dropped_total", front="radius", cause="unknown_client") == 1
    assert delta("mfa_radius_sms_sent_total", gateway="twilio") == 1
    assert delta("mfa_radius_sms_failures_total", gateway="twilio") == 1
    assert delta("mfa_radius_sms_undelivered_total") == 1

    assert after[("mfa_radius_locked_users", ())] == 1
    assert after[("mfa_radius_enrolled_users", ())] == 1
    assert after[("mfa_radius_devices", (("state", "assigned"),))] == 1
    assert after[("mfa_radius_devices", (("state", "unassigned"),))] == 1
    assert after[("mfa_radius_build_info", (("version", "0.1.0"),))] == 1
    assert ("process_resident_memory_bytes", ()) in after
    assert not any(name.endswith("_created") for name, _ in after)


def test_a_broken_database_costs_the_gauges_not_the_scrape(tmp_path):
    cfg = config_mod.load(str(write_config(tmp_path)))  # never initialised: no database
    srv = metrics.start_http("127.0.0.1:0", cfg)
    try:
        samples = scrape(srv)
    finally:
        srv.close()
    assert ("mfa_radius_build_info", (("version", "0.1.0"),)) in samples
    assert ("mfa_radius_locked_users", ()) not in samples


def test_close_frees_the_port_and_the_collector(cfg):
    srv = metrics.start_http("127.0.0.1:0", cfg)
    url = srv.url
    srv.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)
    assert metrics.STORE_GAUGES.config is None


def test_a_busy_port_raises_oserror(server, cfg):
    with pytest.raises(OSError):
        metrics.start_http(f"127.0.0.1:{server.port}", cfg)
    assert metrics.STORE_GAUGES.config is cfg  # the running server's, untouched


@pytest.mark.parametrize("listen, expected", [
    ("127.0.0.1:9812", ("127.0.0.1", 9812)),
    ("[::1]:9812", ("::1", 9812)),
    (":9812", ("0.0.0.0", 9812)),
])
def test_parse_listen(listen, expected):
    where = hostport.parse(listen, any_host="0.0.0.0")
    assert (where.host, where.port) == expected


@pytest.mark.parametrize("listen", ["9812", "127.0.0.1", "::1:9812", "host:99999", "h:p"])
def test_config_refuses_a_bad_listen(tmp_path, listen):
    path = write_config(tmp_path, f'[metrics]\nlisten = "{listen}"\n')
    with pytest.raises(ConfigError, match=r"mfa-radius.toml:6: 'metrics.listen' must be HOST:PORT"):
        config_mod.load(str(path))
    with pytest.raises(ValueError):
        hostport.parse(listen, any_host="0.0.0.0")


def test_sms_sender_hook_counts_real_sends(tmp_path, server):
    """A file gateway that cannot write (a directory as its path), then one that can."""
    from mfa_radius.sms.gateways import SmsSender

    (tmp_path / "not-a-file").mkdir()
    path = write_config(tmp_path, f"""
[[sms.gateways]]
type = "file"
name = "broken"
path = "{tmp_path}/not-a-file"

[[sms.gateways]]
type = "file"
name = "spool"
path = "{tmp_path}/sms.log"
""")
    sender = SmsSender.from_config(config_mod.load(str(path)), on_event=metrics.sms_event)
    before = scrape(server)
    assert sender.send("+15557770001", "Your login code is 123456").ok
    after = scrape(server)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("mfa_radius_sms_failures_total", gateway="broken") == 1
    assert delta("mfa_radius_sms_sent_total", gateway="spool") == 1
    assert delta("mfa_radius_sms_undelivered_total") == 0
