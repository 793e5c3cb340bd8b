"""A throw-away PostgreSQL cluster: initdb in a new directory, a free TCP port on 127.0.0.1
(password auth, scram) and a Unix socket in that directory (trust, for the owner's own admin
connections), stopped and removed at the end. The benchmark's PostgreSQL part runs on one; the
tests' cluster (tests/pg_support.py) is this class with durability turned off.

As root the cluster belongs to the `postgres` user (initdb refuses root), run through
`runuser -u postgres --`.

    cluster = PgCluster.start(base)  # base: an empty directory the postgres user can enter
    db = cluster.new_database()      # a fresh, empty database: PgDatabase
    db.dsn                           # postgresql://mfa_test@127.0.0.1:PORT/NAME (no password)
    cluster.password_file            # 0600, owned by this user: [storage] password_file
    db.storage_toml()                # the [storage] lines for a config using it
    cluster.postmaster_pid()         # the server's root process (its backends are below it)
    cluster.stop(); cluster.restart()   # the server down, then back (same port, same data)
    db.drop(); cluster.destroy()
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

SUPERUSER = "mfa_test"


def find_bin() -> str | None:
    """The newest /usr/lib/postgresql/*/bin holding initdb and pg_ctl, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    for initdb in reversed(found):
        folder = os.path.dirname(initdb)
        if os.access(os.path.join(folder, "pg_ctl"), os.X_OK):
            return folder
    return None


def missing_reason() -> str | None:
    if find_bin() is None:
        return "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; apt install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]' psycopg-pool)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser is missing: cannot run PostgreSQL as the postgres user"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "no postgres user to run the cluster as"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    # postgresql.conf settings (-c NAME=VALUE) on top of PostgreSQL's defaults.
    settings: dict[str, str] = {}

    def __init__(self, base: Path, port: int):
        self.base = base
        self.data = base / "data"
        self.port = port
        # The server's own directories (the postgres user's, as root); the password file stays
        # in `base`, root's, where `serve` trusts it.
        self.socket_dir = str(base / "run")
        self.bin = find_bin()
        self.password = secrets.token_urlsafe(18)
        self.password_file = str(base / "password")

    # ---- running the server --------------------------------------------------------------------

    def _as_owner(self, *cmd: str) -> subprocess.CompletedProcess:
        full = [os.path.join(self.bin, cmd[0]), *cmd[1:]]
        if os.geteuid() == 0:
            full = ["runuser", "-u", "postgres", "--", *full]
        return subprocess.run(full, capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, LC_ALL="C.UTF-8"))

    @classmethod
    def start(cls, base: Path) -> PgCluster:
        cluster = cls(base, free_port())
        cluster._initdb()
        cluster._pg_ctl_start()
        return cluster

    def _initdb(self) -> None:
        run = Path(self.socket_dir)
        run.mkdir(mode=0o755)
        self.data.mkdir(mode=0o700)
        pwfile = run / "initdb-password"
        pwfile.write_text(self.password + "\n")
        os.chmod(pwfile, 0o600)
        if os.geteuid() == 0:
            import pwd

            pg = pwd.getpwnam("postgres")
            for path in (run, self.data, pwfile):
                os.chown(path, pg.pw_uid, pg.pw_gid)
        done = self._as_owner("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust",
                              "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                              "--locale=C.UTF-8", "--no-sync")
        pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()}")
        # The password file the configs name: this user's, 0600 (what [storage] requires).
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.password + "\n")

    def _pg_ctl_start(self) -> None:
        settings = {"listen_addresses": "127.0.0.1", "unix_socket_directories": self.socket_dir,
                    **self.settings}
        options = f"-p {self.port} " + " ".join(f"-c {k}={v}" for k, v in settings.items())
        done = self._as_owner("pg_ctl", "-D", str(self.data), "-l", f"{self.socket_dir}/log",
                              "-o", options, "-w", "-t", "60", "start")
        if done.returncode != 0:
            path = Path(self.socket_dir) / "log"
            log = path.read_text(errors="replace")[-2000:] if path.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()} {log}")

    def postmaster_pid(self) -> int:
        """The running server's root process (first line of postmaster.pid)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """Stop the server now (fast shutdown: open connections are cut)."""
        self._as_owner("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Start it again after stop(), on the same port with the same data."""
        self._pg_ctl_start()

    def destroy(self) -> None:
        self._as_owner("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    # ---- databases -----------------------------------------------------------------------------

    def admin(self, dbname: str = "postgres"):
        """An autocommit superuser connection over the Unix socket (trust)."""
        import psycopg

        return psycopg.connect(host=self.socket_dir, port=self.port, user=SUPERUSER,
                               dbname=dbname, autocommit=True)

    def dsn(self, dbname: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> PgDatabase:
        name = f"mfa_{secrets.token_hex(6)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return PgDatabase(self, name)


class PgDatabase:
    """One database of the cluster."""

    def __init__(self, cluster: PgCluster, name: str):
        self.cluster = cluster
        self.name = name
        self.dsn = cluster.dsn(name)

    def storage_toml(self) -> str:
        """The [storage] keys (after `[storage]`) that point a config at this database."""
        return (f'backend = "postgresql"\ndsn = "{self.dsn}"\n'
                f'password_file = "{self.cluster.password_file}"\n')

    def connect(self):
        """A superuser connection to this database (for tests that look inside)."""
        return self.cluster.admin(self.name)

    def drop(self) -> None:
        for _ in range(3):
            try:
                with self.cluster.admin() as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
                return
            except Exception:  # noqa: BLE001 - the server may be restarting after a test
                time.sleep(0.5)
