"""One class per token kind (mfa_radius/otp.py): the kind rules live there and nowhere else.

The verifier, devices, listings and importers ask the device's key (or otp.KINDS) instead of
branching on the kind's name, so that a third kind is one more subclass in otp.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mfa_radius import otp

PKG = Path(__file__).resolve().parents[1] / "mfa_radius"
RFC4226_SEED = b"12345678901234567890"


def test_no_module_branches_on_a_kind_name():
    # `kind == "totp"`, `row["kind"] == "hotp"`, `in ("totp", "hotp")` ...; otp.py names them.
    branch = re.compile(r"""(==|!=|\bin\b)\s*\(?\s*["'](totp|hotp)["']|["'](totp|hotp)["']\s*(==|!=)""")
    found = [f"{path.relative_to(PKG)}:{n}: {line.strip()}"
             for path in sorted(PKG.rglob("*.py")) if path.name != "otp.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if branch.search(line)]
    assert found == []


def test_every_kind_is_a_key_class_with_its_own_rules():
    assert set(otp.KINDS) == {"totp", "hotp"}
    for name, cls in otp.KINDS.items():
        assert issubclass(cls, otp.OtpKey) and cls.kind == name
        for rule in ("match", "consume", "locate_pair", "pair_missing", "describe"):
            assert getattr(cls, rule) is not getattr(otp.OtpKey, rule), (name, rule)
        key = otp.key_for(name, RFC4226_SEED)
        assert type(key) is cls and key.code(0) == "755224"  # RFC 4226 appendix D


def test_the_base_key_has_no_kind_rules():
    with pytest.raises(NotImplementedError):
        otp.OtpKey(RFC4226_SEED).match(None, "755224", 0.0, None)


class _Device:
    id, period, counter, last_step, drift = 7, 30, 0, -1, 0


class _Windows:
    totp_window, hotp_window = 1, 10


class _Store:
    def __init__(self, wins: bool):
        self.wins, self.calls = wins, []

    def consume_hotp(self, device_id, counter, now):
        self.calls.append((device_id, counter))
        return self.wins

    def consume_step(self, device_id, step, drift, now):
        self.calls.append((device_id, step, drift))
        return self.wins


def test_hotp_consume_is_the_stores_conditional_write():
    key, device = otp.HotpKey(RFC4226_SEED), _Device()
    assert key.match(device, "287082", 0.0, _Windows()) == (1, None)
    lost = _Store(False)
    assert key.consume(device, 1, 0.0, lost) is None and device.counter == 0
    won = _Store(True)
    assert key.consume(device, 1, 0.0, won) == otp.NOT_LOGGED and device.counter == 2
    assert won.calls == [(7, 1)]
    assert key.match(device, "287082", 0.0, _Windows()) == (None, "replay")


def test_totp_consume_is_the_stores_conditional_write_and_returns_the_step():
    key, device = otp.TotpKey(RFC4226_SEED), _Device()
    now = 31 * 30.0
    step, why = key.match(device, key.code(32), now, _Windows())
    assert (step, why) == (32, None)
    lost = _Store(False)
    assert key.consume(device, step, now, lost) is None  # another process used it first
    assert lost.calls == [(7, 32, 1)] and device.last_step != 32
    assert key.consume(device, step, now, _Store(True)) == (7, 32, 1)
    assert (device.last_step, device.drift) == (32, 1)
    assert key.match(device, key.code(32), now, _Windows()) == (None, "replay")
