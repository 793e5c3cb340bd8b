"""Part 7: a slow password server never holds code-only clients.

One mfa-radius, two RADIUS clients: 127.0.0.1 sends password+code, 127.0.0.2 sends the code
alone (`password_backend = "none"`). The password server answers after DELAY seconds, as a
struggling NPS or directory would, in two cases:

- `radius`: an upstream RADIUS server that accepts every Access-Request after DELAY;
- `ldap`: a real slapd (ldapdir.py) with the users' passwords, behind a proxy (slow_proxy.py)
  that holds each of its answers for DELAY, so every bind and search takes DELAY. Plain ldap://
  (`allow_plaintext`) on loopback: TLS would only add round trips, each held for DELAY too.

The code-only latency at a fixed rate is measured alone, then while the password+code requests
queue on the slow server: the packet loop must not wait for them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import blast
import latency
import ldapdir
import radius_bench
import servers
from slow_proxy import SlowProxy
from pathlib import Path

from tokens import current_step, totp, wait_for_room

from mfa_radius.radius import codec

DELAY = 1.0  # seconds the upstream takes to answer
CODE_RATE = 200  # code-only requests per second
SECONDS = 3.0
# Directory checks at once: as many as radclient keeps in flight (-p 50), so that the
# password requests wait on the directory, not on mfa-radius's pool; and the default, where
# they wait in the pool (fewer requests then: two checks a second get through it).
LDAP_POOL = 50
DEFAULT_POOL = 4


class SlowUpstream:
    """A RADIUS server on 127.0.0.1 that accepts every password after DELAY seconds."""

    def __init__(self, secret: str = servers.SECRET, delay: float = DELAY):
        self.secret = codec.Secret(secret.encode())
        self.delay = delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> SlowUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.sock.close()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            threading.Timer(self.delay, self._answer, (data, addr)).start()

    def _answer(self, data: bytes, addr) -> None:
        try:
            request = codec.parse_request(data, self.secret, True)
            self.sock.sendto(codec.build_reply(codec.ACCESS_ACCEPT, request, self.secret), addr)
            self.answered += 1
        except (codec.Malformed, OSError):
            pass


def run(workdir: str, count: int, salt: bytes, log) -> dict:
    """Both cases, `count` password+code requests each."""
    out = {"radius": run_case(os.path.join(workdir, "radius"), count, salt, log, "radius")}
    if ldapdir.missing_reason():
        log(f"isolation: no LDAP case: {ldapdir.missing_reason()}")
    else:
        out["ldap"] = run_case(os.path.join(workdir, "ldap"), count, salt, log, "ldap")
        out["ldap_default_pool"] = run_case(os.path.join(workdir, "ldap4"), max(10, count // 5),
                                            salt, log, "ldap", pool=DEFAULT_POOL)
    return out


@contextlib.contextmanager
def slow_server(workdir: str, backend: str, passwords: dict[str, str], pool: int):
    """(the [radius] lines, the [ldap] section, what counts answers) for a password server
    answering after DELAY."""
    if backend == "radius":
        with SlowUpstream() as upstream:
            yield (f'[[radius.upstream]]\naddress = "127.0.0.1:{upstream.port}"\n'
                   f'secret = "{servers.SECRET}"\ntimeout = 5\nretries = 0\n', "",
                   lambda: {"upstream_answered": upstream.answered})
        return
    base = Path(workdir) / "slapd"
    base.mkdir()
    directory = ldapdir.Slapd.start(base, passwords)
    try:
        with SlowProxy(("127.0.0.1", directory.ldap_port), DELAY) as proxy:
            yield ("", "[ldap]\n"
                   f'servers = ["ldap://127.0.0.1:{proxy.port}"]\nallow_plaintext = true\n'
                   f'bind_dn = "{directory.search_dn}"\n'
                   f'bind_password_file = "{directory.password_file(Path(workdir))}"\n'
                   f'base_dn = "{directory.base_dn}"\nuser_attribute = "uid"\n'
                   f"pool_size = {pool}\n",
                   lambda: {"directory_connections": proxy.connections})
    finally:
        directory.destroy()


def run_case(workdir: str, count: int, salt: bytes, log, backend: str,
             pool: int = LDAP_POOL) -> dict:
    os.makedirs(workdir, exist_ok=True)
    pw_users, pw_seeds = radius_bench.make_users(count, salt, prefix="p")
    code_count = int(CODE_RATE * SECONDS)
    code_users, code_seeds = radius_bench.make_users(2 * code_count, salt, prefix="c")
    passwords = {u: f"Bench-pw-{i}-{u}" for i, u in enumerate(pw_users)}
    what = ("an upstream" if backend == "radius" else "a directory") + f" answering in {DELAY:g} s"
    name = backend if backend == "radius" else f"ldap, pool_size {pool}"
    out: dict = {"backend": backend, "delay_s": DELAY, "password_requests": count,
                 "code_rate": CODE_RATE}
    if backend == "ldap":
        out["pool_size"] = pool
    with slow_server(workdir, backend, passwords, pool) as (radius_extra, ldap_section, answered):
        port = servers.free_udp_port()
        config = servers.write_mfa_config(
            workdir, port, backend=backend, radius_extra=radius_extra,
            extra=(f'[[radius.clients]]\nname = "wifi"\naddress = "127.0.0.2"\n'
                   f'secret = "{servers.SECRET}"\npassword_backend = "none"\n\n'
                   + ldap_section))
        servers.mfa(config, "init")
        csv_path = os.path.join(workdir, "tokens.csv")
        radius_bench.write_csv(csv_path, pw_users + code_users, pw_seeds + code_seeds, "I")
        radius_bench.import_csv(config, csv_path)
        with servers.start_mfa(workdir, config, port):
            wait_for_room(SECONDS * 2 + count / 20 + 5)
            step = current_step()
            alone = [(u, totp(s, step)) for u, s in zip(code_users[:code_count],
                                                        code_seeds[:code_count])]
            log(f"isolation ({name}): code-only alone at {CODE_RATE}/s")
            out["code_only_alone"] = latency.run(port, alone, CODE_RATE, source="127.0.0.2")
            path = os.path.join(workdir, "pw.txt")
            blast.write_file(path, pw_users,
                             [passwords[u] + totp(s, step) for u, s in zip(pw_users, pw_seeds)])
            box: dict = {}

            def load():
                box["result"] = blast.radclient(path, port, parallel=50, timeout=30)

            log(f"isolation ({name}): {count} password+code requests on {what}, "
                f"code-only at {CODE_RATE}/s meanwhile")
            thread = threading.Thread(target=load)
            thread.start()
            time.sleep(0.3)  # the password requests are queued on the slow server by now
            during = [(u, totp(s, step)) for u, s in zip(code_users[code_count:],
                                                         code_seeds[code_count:])]
            out["code_only_during"] = latency.run(port, during, CODE_RATE, source="127.0.0.2")
            out["password_still_running"] = thread.is_alive()
            thread.join()
            out["password_blast"] = box["result"]
            out.update(answered())
    alone, during = out["code_only_alone"], out["code_only_during"]
    out["met"] = (during["accepted"] == len(code_users) - code_count
                  and during["p99_ms"] <= max(2 * alone["p99_ms"], alone["p99_ms"] + 5))
    return out


def table(iso: dict) -> list[str]:
    cases = [iso[k] for k in ("radius", "ldap", "ldap_default_pool") if k in iso] or [iso]  # or an older run's one
    lines = [f"Code-only clients (127.0.0.2) while password+code requests (127.0.0.1, "
             f"radclient -p 50) queue on a password server answering in "
             f"{cases[0]['delay_s']:g} s", "",
             "| code-only at {0}/s | p50 (ms) | p99 (ms) | accepted | lost |".format(
                 cases[0]["code_rate"]),
             "|---|---|---|---|---|"]
    notes = []
    for case in cases:
        alone, during = case["code_only_alone"], case["code_only_during"]
        pw = case["password_blast"]
        slow = (f"LDAP directory (pool_size {case['pool_size']})"
                if case.get("backend") == "ldap" else "upstream RADIUS")
        lines += [f"| {slow}: alone | {alone['p50_ms']} | {alone['p99_ms']} | "
                  f"{alone['accepted']} | {alone['lost']} |",
                  f"| {slow}: while {case['password_requests']} password+code requests wait "
                  f"on it | {during['p50_ms']} | {during['p99_ms']} | "
                  f"{during['accepted']} | {during['lost']} |"]
        answered = (f"directory connections {case['directory_connections']}"
                    if "directory_connections" in case
                    else f"upstream answered {case.get('upstream_answered')}")
        notes.append(f"{slow}: password+code {pw['accepted']} accepted, {pw['rejected']} "
                     f"rejected, {pw['lost']} lost in {pw['wall']:.1f} s ({answered}); "
                     f"code-only p99 under load within max(2 x alone, alone + 5 ms): "
                     f"{'yes' if case['met'] else 'NO'}")
    return lines + [""] + notes
