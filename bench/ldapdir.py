"""A throw-away OpenLDAP directory: a real `slapd` (Debian packages slapd, ldap-utils) on free
loopback ports, ldap:// and ldaps://, with a CA and server certificate made here, an mdb database
under dc=example,dc=com loaded with slapadd: the tree, a search account and the users given. The
benchmark's slow-directory case runs on one; the tests' directory (tests/ldap_support.py) is this
one with their users and groups.

    directory = Slapd.start(base, {"alice": "Alice-pw-1"})
    directory.ldap_url, directory.ldaps_url, directory.ca_file, directory.search_dn ...
    directory.password_file(where)   # the search account's password, 0600
    directory.restart(); directory.destroy()

Debian's own slapd service is never used: this one runs with its own config (slapd -f) and its
own pid file.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
LDAPADD = "/usr/bin/ldapadd"
SUFFIX = "dc=example,dc=com"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "root-secret-pw"
SEARCH_DN = f"cn=search,ou=system,{SUFFIX}"
SEARCH_PW = "search-secret-pw"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")

def missing_reason() -> str | None:
    for tool in (SLAPD, SLAPADD, LDAPADD):
        if not os.path.exists(tool):
            return f"{tool} not installed (Debian packages slapd, ldap-utils)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_dn(uid: str) -> str:
    return f"uid={uid},ou=people,{SUFFIX}"


def group_dn(name: str) -> str:
    return f"cn={name},ou=groups,{SUFFIX}"


def make_ca(base: Path, name: str):
    """A self-signed CA (key, certificate), written to base/NAME.pem; returns (key, cert)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    (base / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def make_server_cert(base: Path, ca_key, ca_cert,
                     names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> tuple[Path, Path]:
    """A server certificate for `names` (host names, IP addresses), signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = base / "server.pem", base / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def _san(name: str):
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def people_ldif(users: dict[str, str]) -> str:
    """The tree, the search account and the users (uid -> password) under ou=people."""
    entries = [f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
               "dc: example\no: Example\n"]
    for ou in ("people", "groups", "system"):
        entries.append(f"dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n")
    entries.append(f"dn: {SEARCH_DN}\nobjectClass: organizationalRole\n"
                   "objectClass: simpleSecurityObject\ncn: search\n"
                   f"userPassword: {SEARCH_PW}\n")
    for uid, password in users.items():
        entries.append(f"dn: {user_dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
                       f"cn: {uid.title()}\nsn: {uid.title()}\n"
                       f"mail: {uid}@example.com\nuserPassword: {password}\n")
    return "\n".join(entries)


@dataclass
class Slapd:
    base: Path
    ldap_port: int
    ldaps_port: int
    proc: subprocess.Popen | None
    ca_file: Path
    wrong_ca_file: Path

    search_dn = SEARCH_DN
    base_dn = SUFFIX

    @property
    def ldap_url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    def password_file(self, where: Path) -> Path:
        """The search account's password, in a 0600 file under `where`."""
        path = where / "ldap-bind.pw"
        path.write_text(SEARCH_PW + "\n")
        os.chmod(path, 0o600)
        return path

    @classmethod
    def start(cls, base: Path, users: dict[str, str],
              cert_names: tuple[str, ...] = ("localhost", "127.0.0.1"),
              online_ldif: str = "") -> Slapd:
        """`users`: uid -> password; `cert_names`: what the server certificate names (another
        host's: a mismatch); `online_ldif`: entries added once slapd runs (through its
        overlays, which slapadd does not run)."""
        ca_key, ca_cert = make_ca(base, "ca")
        make_ca(base, "wrong-ca")
        cert, key = make_server_cert(base, ca_key, ca_cert, cert_names)
        (base / "db").mkdir()
        conf = base / "slapd.conf"
        conf.write_text(
            "".join(f"include /etc/ldap/schema/{s}.schema\n" for s in SCHEMAS) +
            f"pidfile {base}/slapd.pid\n"
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\nmoduleload memberof\n"
            f"TLSCACertificateFile {base}/ca.pem\n"
            f"TLSCertificateFile {cert}\nTLSCertificateKeyFile {key}\n"
            "database mdb\nmaxsize 104857600\n"
            f'suffix "{SUFFIX}"\nrootdn "{ROOT_DN}"\nrootpw {ROOT_PW}\n'
            f"directory {base}/db\n"
            "overlay memberof\n"
            "access to attrs=userPassword by anonymous auth by * none\n"
            "access to * by users read by * none\n")
        (base / "data.ldif").write_text(people_ldif(users))
        subprocess.run([SLAPADD, "-f", str(conf), "-l", str(base / "data.ldif")], check=True,
                       capture_output=True)
        directory = cls(base, free_port(), free_port(), None, base / "ca.pem",
                        base / "wrong-ca.pem")
        directory._run()
        if online_ldif:
            (base / "online.ldif").write_text(online_ldif)
            subprocess.run([LDAPADD, "-x", "-H", directory.ldap_url, "-D", ROOT_DN, "-w",
                            ROOT_PW, "-f", str(base / "online.ldif")], check=True,
                           capture_output=True)
        return directory

    def _run(self) -> None:
        urls = f"{self.ldap_url}/ {self.ldaps_url}/"
        log = open(self.base / "slapd.log", "ab")
        # -d 0: in the foreground (killed with the suite), nothing logged but errors.
        self.proc = subprocess.Popen([SLAPD, "-f", str(self.base / "slapd.conf"), "-h", urls,
                                      "-d", "0"], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited {self.proc.returncode}: "
                                   f"{(self.base / 'slapd.log').read_text(errors='replace')}")
            try:
                for port in (self.ldap_port, self.ldaps_port):
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("slapd did not start listening")

    def restart(self) -> None:
        """Stop and start again on the same ports: every open connection is cut."""
        self.stop()
        self._run()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
