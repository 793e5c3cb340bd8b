"""Part 7: a slow password server never holds code-only clients.

One mfa-radius, two RADIUS clients: 127.0.0.1 sends password+code (`password_backend = "radius"`,
to an upstream that answers every Access-Request after DELAY seconds, as a struggling NPS or
directory would), 127.0.0.2 sends the code alone (`password_backend = "none"`). The code-only
latency at a fixed rate is measured alone, then while the password+code requests queue on the
slow upstream: the packet loop must not wait for them.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import blast
import latency
import radius_bench
import servers
from tokens import current_step, totp, wait_for_room

from mfa_radius.radius import codec

DELAY = 1.0  # seconds the upstream takes to answer
CODE_RATE = 200  # code-only requests per second
SECONDS = 3.0


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
    os.makedirs(workdir, exist_ok=True)
    pw_users, pw_seeds = radius_bench.make_users(count, salt, prefix="p")
    code_count = int(CODE_RATE * SECONDS)
    code_users, code_seeds = radius_bench.make_users(2 * code_count, salt, prefix="c")
    password = "Bench-password-1"
    out: dict = {"delay_s": DELAY, "password_requests": count, "code_rate": CODE_RATE}
    with SlowUpstream() as upstream:
        port = servers.free_udp_port()
        config = servers.write_mfa_config(
            workdir, port, backend="radius",
            radius_extra=(f'[[radius.upstream]]\naddress = "127.0.0.1:{upstream.port}"\n'
                          f'secret = "{servers.SECRET}"\ntimeout = 5\nretries = 0\n'),
            extra=(f'[[radius.clients]]\nname = "wifi"\naddress = "127.0.0.2"\n'
                   f'secret = "{servers.SECRET}"\npassword_backend = "none"\n'))
        servers.mfa(config, "init")
        csv_path = os.path.join(workdir, "tokens.csv")
        radius_bench.write_csv(csv_path, pw_users + code_users, pw_seeds + code_seeds, "I")
        radius_bench.import_csv(config, csv_path)
        with servers.start_mfa(workdir, config, port) as server:
            wait_for_room(SECONDS * 2 + count / 40 + 5)
            step = current_step()
            alone = [(u, totp(s, step)) for u, s in zip(code_users[:code_count],
                                                        code_seeds[:code_count])]
            log(f"isolation: code-only alone at {CODE_RATE}/s")
            out["code_only_alone"] = latency.run(port, alone, CODE_RATE, source="127.0.0.2")
            path = os.path.join(workdir, "pw.txt")
            blast.write_file(path, pw_users, [password + totp(s, step) for s in pw_seeds])
            box: dict = {}

            def load():
                box["result"] = blast.radclient(path, port, parallel=50, timeout=20)

            log(f"isolation: {count} password+code requests on an upstream answering in "
                f"{DELAY:g} s, code-only at {CODE_RATE}/s meanwhile")
            thread = threading.Thread(target=load)
            thread.start()
            time.sleep(0.3)  # the password requests are queued on the upstream by now
            during = [(u, totp(s, step)) for u, s in zip(code_users[code_count:],
                                                         code_seeds[code_count:])]
            out["code_only_during"] = latency.run(port, during, CODE_RATE, source="127.0.0.2")
            out["password_still_running"] = thread.is_alive()
            thread.join()
            out["password_blast"] = box["result"]
            out["upstream_answered"] = upstream.answered
    alone, during = out["code_only_alone"], out["code_only_during"]
    out["met"] = (during["accepted"] == len(code_users) - code_count
                  and during["p99_ms"] <= max(2 * alone["p99_ms"], alone["p99_ms"] + 5))
    return out


def table(iso: dict) -> list[str]:
    alone, during = iso["code_only_alone"], iso["code_only_during"]
    pw = iso["password_blast"]
    return [f"Code-only clients while password+code requests queue on an upstream answering in "
            f"{iso['delay_s']:g} s ({iso['password_requests']} requests, radclient -p 50)", "",
            "| code-only at {0}/s | p50 (ms) | p99 (ms) | accepted | lost |".format(
                iso["code_rate"]),
            "|---|---|---|---|---|",
            f"| alone | {alone['p50_ms']} | {alone['p99_ms']} | {alone['accepted']} | "
            f"{alone['lost']} |",
            f"| while the upstream is slow | {during['p50_ms']} | {during['p99_ms']} | "
            f"{during['accepted']} | {during['lost']} |", "",
            f"password+code: {pw['accepted']} accepted, {pw['rejected']} rejected, {pw['lost']} "
            f"lost in {pw['wall']:.1f} s (upstream answered {iso['upstream_answered']}); "
            f"code-only p99 under load within max(2 x alone, alone + 5 ms): "
            f"{'yes' if iso['met'] else 'NO'}"]
