"""The PAM module's code, imported by pam_module/pam_mfa.py (the file pam_python.so loads).

pam_python compiles the file it is given from source for every PAM handle (and writes no .pyc), so
that file is a few lines and this module, imported normally, is read from its precompiled
`__pycache__` (`python3 -m compileall pam_module/` at install; the tests do it too).

The normal path imports only `_socket` and asks the mfa-radius daemon over its Unix socket (as
pam_sss asks sssd); the verifier is imported only by the in-process fallback. Options and results:
see pam_mfa.py and docs/ssh.md. Fails closed: any error is one syslog line (authpriv) and
PAM_AUTH_ERR or PAM_AUTHINFO_UNAVAIL, never a traceback on the terminal.
"""

import _socket

DEFAULT_SOCKET = "/run/mfa-radius/pam.sock"
DEFAULT_CONFIG = "/etc/mfa-radius/mfa-radius.toml"
DEFAULT_PROMPT = "Verification code: "
FORWARD_PROMPT = "Password & verification code: "
PASSWORD_PROMPT = "Password: "
RECOVERY_PROMPT = "Recovery code: "
# The daemon answers in milliseconds; a recovery code costs it one scrypt. A daemon that does
# not answer within this is treated as unavailable (fallback applies).
TIMEOUT = 10.0
# A full listen backlog (EAGAIN), a refused connection (a daemon between its restart's bind and
# listen) or a "busy" answer is retried for this long before the daemon counts as unavailable.
BUSY_RETRY = 1.5
MAX_RESPONSE = 4096
_FLAGS = ("nullok", "forward_pass", "try_first_pass", "use_first_pass",
          "echo_verification_code", "debug")
_VALUES = ("socket", "root_socket", "daemon_user", "config", "fallback", "venv", "prompt")
_EAGAIN, _ECONNREFUSED = 11, 111  # Linux errno values (errno is not imported)
_SO_PEERCRED = 17  # Linux; struct ucred {pid, uid, gid}, three native ints
_BYTEORDER = __import__("sys").byteorder


class _Unavailable(Exception):
    """The daemon could not be asked (no socket, refused, timed out, hung up)."""


class _Untrusted(Exception):
    """What answers on the socket is not the daemon (another uid, a directory others control):
    an attack or a broken install. Refused, never a fallback."""


class _Busy(Exception):
    """The daemon's socket is there but did not take the connection now (EAGAIN, ECONNREFUSED)."""


class _Misconfigured(Exception):
    """A bad module option: refuse, and say which in syslog."""


# ---- wire format: the same as mfa_radius/pam_protocol.py (kept in step by a test) -------------

def _escape(value):
    return (value.replace("%", "%25").replace("\t", "%09")
            .replace("\r", "%0D").replace("\n", "%0A"))


def _unescape(value):
    return (value.replace("%09", "\t").replace("%0D", "\r")
            .replace("%0A", "\n").replace("%25", "%"))


def encode(head, fields):
    parts = [head]
    for key, value in fields.items():
        parts.append(key + "=" + _escape(str(value)))
    return ("\t".join(parts) + "\n").encode("utf-8", "surrogateescape")


def decode(line):
    text = line.decode("utf-8")
    if not text.endswith("\n") or "\n" in text[:-1]:
        raise ValueError("not one line")
    head, *parts = text[:-1].split("\t")
    fields = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key or key in fields:
            raise ValueError("bad field")
        fields[key] = _unescape(value)
    return head, fields


# ---- syslog ---------------------------------------------------------------------------------

LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG = 3, 4, 5, 6, 7
_AUTHPRIV = 10 << 3


def _syslog(service, priority, message):
    """One line to /dev/log, facility authpriv.

    Written to the socket directly rather than through the `syslog` module, whose openlog() would
    change the calling program's own ident and facility (sshd's) for the rest of its life.
    """
    try:
        import os
        import time

        line = "<%d>%s pam_mfa(%s:auth)[%d]: %s" % (
            _AUTHPRIV | priority, time.strftime("%b %d %H:%M:%S"), service or "?", os.getpid(),
            str(message)[:2048].translate(_ESCAPED_LINE))
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        try:
            sock.settimeout(1.0)
            sock.connect("/dev/log")
            sock.send(line.encode("utf-8", "backslashreplace")[:2048])
        finally:
            sock.close()
    except Exception:  # noqa: BLE001 - no syslog must never break a login
        pass


# Controls, C1, and the characters that reorder or break a line on display (bidi embeddings,
# overrides and isolates, left/right marks, line and paragraph separators).
_ESCAPED_LINE = {c: "\\x%02x" % c for c in (*range(0x20), *range(0x7f, 0xa0))}
_ESCAPED_LINE.update({c: "\\u%04x" % c for c in (0x200e, 0x200f, 0x2028, 0x2029,
                                                *range(0x202a, 0x202f), *range(0x2066, 0x206a))})
# In a value, a backslash is escaped too, so that no value can forge an escape.
_ESCAPED = dict(_ESCAPED_LINE)
_ESCAPED[0x5c] = "\\\\"


def _clean(text, limit=256):
    """A caller-supplied string made safe for one log line: every control, C1 and bidi/line
    separator escaped (and backslash, so an escape cannot be forged)."""
    return str(text)[:limit].translate(_ESCAPED)


def _field(key, value):
    """key=value for a log line, logfmt: quoted when empty or holding a space, quote or '='."""
    text = _clean(value)
    if not text or any(c in text for c in ' "='):
        text = '"' + text.replace('"', '\\"') + '"'
    return key + "=" + text


# ---- options --------------------------------------------------------------------------------

def _options(argv):
    opts = {"socket": DEFAULT_SOCKET, "root_socket": "", "daemon_user": "",
            "config": DEFAULT_CONFIG, "fallback": "local", "venv": "", "prompt": DEFAULT_PROMPT,
            "module": argv[0] if argv else ""}
    for flag in _FLAGS:
        opts[flag] = False
    for arg in argv[1:]:
        key, sep, value = arg.partition("=")
        if not sep and key in _FLAGS:
            opts[key] = True
        elif sep and key in _VALUES:
            opts[key] = value.replace("_", " ") if key == "prompt" else value
        else:
            raise _Misconfigured("unknown option '%s'" % _clean(arg))
    if opts["fallback"] not in ("local", "deny"):
        raise _Misconfigured("fallback must be local or deny, not '%s'" % _clean(opts["fallback"]))
    if not opts["root_socket"]:
        # The daemon's default too: a root/ directory beside the socket ([pam] root_socket).
        head, _, name = opts["socket"].rpartition("/")
        opts["root_socket"] = head + "/root/" + name
    for key in ("socket", "root_socket", "config", "venv"):
        if opts[key] and not opts[key].startswith("/"):
            raise _Misconfigured("%s= must be an absolute path, not '%s'"
                                 % (key, _clean(opts[key])))
    opts["daemon_uids"] = (0,)
    if opts["daemon_user"]:
        import pwd

        try:
            opts["daemon_uids"] = (0, pwd.getpwnam(opts["daemon_user"]).pw_uid)
        except KeyError:
            raise _Misconfigured("daemon_user=%s: no such user"
                                 % _clean(opts["daemon_user"])) from None
    return opts


# ---- asking the daemon, or the verifier in-process -------------------------------------------

class _Client:
    def __init__(self, opts, log):
        self.opts = opts
        self.log = log
        self.via = "socket"

    def ask(self, op, fields):
        """(head, reply fields) from the daemon, or from the in-process fallback."""
        if self.via == "socket":
            try:
                return self._ask_socket(op, fields)
            except _Unavailable as exc:
                if self.opts["fallback"] != "local":
                    raise
                self.log(LOG_WARNING, "daemon unavailable (%s): verifying in-process" % exc)
                self.via = "local"
        return "ok", self._ask_local(op, fields)

    def _ask_socket(self, op, fields):
        """One request; a busy daemon (full backlog, refused while restarting, "busy") is asked
        again for up to BUSY_RETRY seconds."""
        import os

        # Root's own socket in a root-only directory: other users cannot even connect to it, so
        # nothing they do fills its backlog.
        path = self.opts["root_socket"] if os.geteuid() == 0 else self.opts["socket"]
        deadline = None
        pause = 0.02
        while True:
            try:
                head, reply = self._ask_once(path, op, fields)
                if head != "error" or reply.get("reason") != "busy":
                    return head, reply
                busy = "busy"
            except _Busy as exc:
                busy = str(exc)
            import time

            now = time.monotonic()
            deadline = deadline or now + BUSY_RETRY
            if now + pause > deadline:
                raise _Unavailable("%s: still busy after %.1f s (%s)" % (path, BUSY_RETRY, busy))
            time.sleep(pause)
            pause = min(pause * 2, 0.25)

    def _ask_once(self, path, op, fields):
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(TIMEOUT)
            try:
                sock.connect(path)
            except OSError as exc:
                if exc.errno in (_EAGAIN, _ECONNREFUSED):
                    raise _Busy(exc.strerror or type(exc).__name__) from None
                raise _Unavailable("%s: %s" % (path, exc.strerror or type(exc).__name__)) \
                    from None
            self._check_server(sock, path)
            try:
                sock.sendall(encode(op, fields))
                data = b""
                while not data.endswith(b"\n") and len(data) < MAX_RESPONSE:
                    chunk = sock.recv(MAX_RESPONSE)
                    if not chunk:
                        break
                    data += chunk
            except OSError as exc:
                raise _Unavailable("%s: %s" % (path, exc.strerror or type(exc).__name__)) \
                    from None
        finally:
            sock.close()
        if not data:
            raise _Unavailable("%s: closed without an answer" % path)
        try:
            return decode(data)
        except ValueError:
            raise _Unavailable("%s: unreadable answer" % path) from None

    def _check_server(self, sock, path):
        """Refuse a server that is not the daemon before telling it anything: its kernel
        credentials must be root's (or daemon_user's), and no one else may control the socket's
        directory or any directory above it (else the path could be pointed elsewhere)."""
        allowed = self.opts["daemon_uids"]
        try:
            cred = sock.getsockopt(_socket.SOL_SOCKET, _SO_PEERCRED, 12)
            uid = int.from_bytes(cred[4:8], _BYTEORDER)
        except OSError as exc:
            raise _Untrusted("%s: no peer credentials (%s)" % (path, exc.strerror)) from None
        if uid not in allowed:
            raise _Untrusted("%s is served by uid %d, not by the daemon (uid %s)" % (
                path, uid, " or ".join(map(str, allowed))))
        directory = path.rpartition("/")[0] or "/"
        fault = _socket_dir_fault(directory, allowed)
        if fault is not None:
            raise _Untrusted("%s: %s %s" % (path, fault[0], fault[1]))

    def _ask_local(self, op, fields):
        _add_venv(self.opts)
        from mfa_radius import pam_local

        return pam_local.request(op, fields, self.opts["config"], _getuid(), log=self.log)


def _add_venv(opts):
    """Put the virtualenv's site-packages (and a checkout's source) on sys.path for the fallback.

    Placed after the standard library and before the system's dist-packages, as in the venv
    itself, so the venv's cryptography wins over Debian's python3-cryptography. The .pth files are
    not run (site.addsitedir would import what they name, in every login); a checkout, installed
    editable, is found directly instead: mfa_radius/ beside pam_module/.

    As root, a directory it would import from must be root's alone (untrusted()), checked here
    before anything is imported from it: code in it runs as root.
    """
    import os
    import sys

    module = opts["module"]
    as_root = os.geteuid() == 0
    for venv in [opts["venv"]] if opts["venv"] else _default_venvs(module):
        site_dir = os.path.join(venv, "lib", "python%d.%d" % sys.version_info[:2],
                                "site-packages")
        if os.path.isdir(site_dir):
            if as_root:
                _refuse_untrusted(site_dir, "venv=" if opts["venv"] else "the module's virtualenv")
            if site_dir not in sys.path:
                where = [i for i, p in enumerate(sys.path) if "-packages" in p]
                sys.path.insert(where[0] if where else len(sys.path), site_dir)
            break
    if module.startswith("/"):
        checkout = os.path.dirname(os.path.dirname(module))
        package = os.path.join(checkout, "mfa_radius")
        if os.path.isdir(package) and checkout not in sys.path:
            if as_root:
                _refuse_untrusted(package, "the module's checkout")
            sys.path.append(checkout)


def _refuse_untrusted(path, what):
    fault = untrusted(path)
    if fault is not None:
        culprit, problem = fault
        raise _Misconfigured("untrusted %s %s: %s %s; fix it with: %s" % (
            what, _clean(path), _clean(culprit), problem,
            ("chown root:root %s && chmod go-w %s" % (_clean(culprit), _clean(culprit)))
            if "not root" in problem else
            "move it to a directory only root can write to" if "(mode 1" in problem
            else "chmod go-w %s" % _clean(culprit)))


def _default_venvs(module_path):
    """Where the fallback looks for mfa_radius: a checkout's .venv next to pam_module/
    (/work/main/pam_module/pam_mfa.py -> /work/main/.venv), or an install whose directory is
    itself the venv (/opt/mfa-radius/pam_module/pam_mfa.py -> /opt/mfa-radius). Only from an
    absolute module path: nothing here depends on the working directory."""
    import os

    if not module_path.startswith("/"):
        return []
    base = os.path.dirname(os.path.dirname(module_path))
    return [os.path.join(base, ".venv"), base]


def _socket_dir_fault(directory, allowed):
    """None, or (path, problem) when the socket's directory chain is not the daemon's alone: every
    directory root's (untrusted()), except that the innermost ones (/run/mfa-radius and its
    root/) may belong to a daemon_user."""
    if allowed == (0,):
        return untrusted(directory)
    import os
    import stat

    while directory not in ("/", ""):
        try:
            st = os.lstat(directory)
        except OSError as exc:
            return directory, "cannot be checked (%s)" % (exc.strerror or type(exc).__name__)
        if st.st_uid == 0 or not stat.S_ISDIR(st.st_mode):
            break  # root's from here up (or a link): the common rule decides
        if st.st_uid not in allowed:
            return directory, "is owned by uid %d, not root or daemon_user" % st.st_uid
        if st.st_mode & 0o022:
            return directory, "is writable by group or others (mode %04o)" % (
                st.st_mode & 0o7777)
        directory = os.path.dirname(directory)
    return untrusted(directory or "/")


# The same function as mfa_radius/trusted_paths.py's (tests/test_trusted_paths.py keeps the two
# identical): the module cannot import it from a virtualenv it has not checked yet.
def untrusted(path):
    """None if `path` and every directory above it are root's alone (links followed); otherwise
    (the path at fault, what is wrong with it)."""
    import os
    import stat

    if not path.startswith("/"):
        return path, "is not an absolute path"
    todo = [part for part in path.split("/") if part and part != "."]
    current, links = "/", 0
    while True:
        try:
            st = os.lstat(current)
        except OSError as exc:
            return current, "cannot be checked (%s)" % (exc.strerror or type(exc).__name__)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 40:
                return current, "has too many levels of symbolic links"
            target = os.readlink(current)
            todo = [part for part in target.split("/") if part and part != "."] + todo
            current = "/" if target.startswith("/") else os.path.dirname(current)
            continue
        if st.st_uid != 0:
            return current, "is owned by uid %d, not root" % st.st_uid
        if st.st_mode & 0o022:
            return current, "is writable by group or others (mode %04o)" % (st.st_mode & 0o7777)
        if not todo:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return current, "is not a directory"
        part = todo.pop(0)
        # `current` holds no link here, so its lexical parent is its real parent.
        current = os.path.dirname(current) if part == ".." else os.path.join(current, part)


def _getuid():
    import os

    return os.getuid()


# ---- the PAM conversation -------------------------------------------------------------------

def _prompt(pamh, text, echo):
    style = pamh.PAM_PROMPT_ECHO_ON if echo else pamh.PAM_PROMPT_ECHO_OFF
    response = pamh.conversation(pamh.Message(style, text))
    return response.resp or ""


_silent = False  # PAM_SILENT: the application asked for no messages (set per call)


def _tell(pamh, text, info=False):
    if text and not _silent:
        try:
            style = pamh.PAM_TEXT_INFO if info else pamh.PAM_ERROR_MSG
            pamh.conversation(pamh.Message(style, text))
        except Exception:  # noqa: BLE001 - a message the user cannot see is not a failure
            pass


def split_code(text, digits):
    """(password, code) with the code taken off the end, or None if it does not end in one.

    A recovery code must keep its dash here ("12345-67890"); a TOTP/HOTP code is the user's
    device length (6 when the user has devices of several lengths or none).
    """
    if (len(text) >= 11 and text[-6] == "-" and text[-11:-6].isdigit()
            and text[-5:].isdigit() and text[-11:].isascii()):
        return text[:-11], text[-11:]
    size = digits[0] if len(digits) == 1 else 6
    tail = text[-size:]
    if len(text) >= size and tail.isascii() and tail.isdigit():
        return text[:-size], tail
    return None


def _digits(status):
    try:
        return [int(d) for d in status.get("digits", "").split(",") if d]
    except ValueError:
        return []


def _authenticate(pamh, argv, log):
    opts = _options(argv)
    if opts["debug"]:
        debug = log
    else:
        def debug(priority, message):
            pass
    user = pamh.get_user(None)
    if not user:
        log(LOG_ERR, "no user name")
        return pamh.PAM_USER_UNKNOWN
    client = _Client(opts, log)
    context = {"service": pamh.service or "", "rhost": pamh.rhost or "", "tty": pamh.tty or ""}
    where = _field("user", user) + " " + _field("rhost", context["rhost"] or "-")

    try:
        head, status = client.ask("status", {"user": user})
    except _Unavailable as exc:
        log(LOG_ERR, "%s result=reject reason=unavailable: %s (fallback=deny)" % (where, exc))
        return pamh.PAM_AUTHINFO_UNAVAIL
    if head != "ok":
        return _refused(pamh, log, where, status)
    state = status.get("status", "")
    debug(LOG_DEBUG, "%s status=%s via=%s" % (where, state, client.via))

    needs_code = state in ("enrolled", "required") or (state == "no_device" and not opts["nullok"])
    if state == "locked":
        return _locked(pamh, opts, client, log, where, context, user, status)
    if state == "malformed":
        # The daemon's name rule refused the name (surrounding spaces, controls, ...).
        log(LOG_NOTICE, "%s result=reject reason=malformed via=%s" % (where, client.via))
        return pamh.PAM_AUTH_ERR
    if not needs_code:
        if opts["forward_pass"] and not (opts["use_first_pass"] or opts["try_first_pass"]):
            # The next module was told to use_first_pass: it still needs the password.
            pamh.authtok = _prompt(pamh, PASSWORD_PROMPT, False)
        if state == "exempt":
            log(LOG_INFO, "%s result=accept reason=exempt via=%s" % (where, client.via))
            return pamh.PAM_SUCCESS
        if state in ("allowed_without_device", "no_device"):
            log(LOG_INFO, "%s result=ignore reason=%s via=%s" % (where, state, client.via))
            return pamh.PAM_IGNORE
        log(LOG_ERR, "%s result=reject reason=unknown_status status=%s" % (where, _clean(state)))
        return pamh.PAM_AUTH_ERR

    digits = _digits(status)
    if opts["use_first_pass"] or opts["try_first_pass"]:
        split = _first_pass(pamh.authtok or "", digits)
        if split is not None:
            result, reason = _verify(pamh, opts, client, log, where, context, user, state, split)
            if not (opts["try_first_pass"] and reason == "bad_code"):
                return result
        elif opts["use_first_pass"]:
            log(LOG_NOTICE, "%s result=reject reason=no_code_in_first_pass" % where)
            return pamh.PAM_AUTH_ERR
    sms = status.get("sms") == "1"
    if sms and status.get("sms_only") == "1":
        # SMS is this user's only method: send the code before asking for it.
        _send_sms(pamh, client, log, where, dict(context, user=user))
    if opts["forward_pass"]:
        entered = _prompt(pamh, FORWARD_PROMPT, False)
        # No code at the end: forward the whole text; the empty code then fails cleanly.
        split = split_code(entered, digits) or (entered, "")
    else:
        answer = _prompt(pamh, opts["prompt"], opts["echo_verification_code"]).strip()
        if sms and answer.lower() in ("", "sms"):
            # Enter alone, or "sms": the user asks for a code by SMS, then types it.
            _send_sms(pamh, client, log, where, dict(context, user=user))
            answer = _prompt(pamh, opts["prompt"], opts["echo_verification_code"]).strip()
        split = (None, answer)
    return _verify(pamh, opts, client, log, where, context, user, state, split)[0]


def _locked(pamh, opts, client, log, where, context, user, status):
    """A locked user: PAM_MAXTRIES, unless they hold recovery codes and type one (a valid
    recovery code opens a locked account, so that an attacker who keeps root locked does not
    leave the admin only the console)."""
    wait = "Too many failed attempts: try again in %s seconds" % status.get("retry_after", "?")
    if status.get("recovery") != "1" or opts["use_first_pass"] or opts["forward_pass"]:
        _tell(pamh, wait + ".")
        log(LOG_NOTICE, "%s result=reject reason=locked via=%s" % (where, client.via))
        return pamh.PAM_MAXTRIES
    _tell(pamh, wait + ", or enter a recovery code.", info=True)
    answer = _prompt(pamh, RECOVERY_PROMPT, False).strip()
    if not answer:
        log(LOG_NOTICE, "%s result=reject reason=locked via=%s" % (where, client.via))
        return pamh.PAM_MAXTRIES
    return _verify(pamh, opts, client, log, where, context, user, "locked", (None, answer))[0]


def _send_sms(pamh, client, log, where, fields):
    """Ask for a code by SMS; tell the user where it went ("... phone ending 1234") or why not."""
    head, reply = client.ask("sms", fields)
    sent = head == "ok" and reply.get("sent") == "1"
    log(LOG_INFO if sent else LOG_NOTICE, "%s sms=%s reason=%s via=%s" % (
        where, "sent" if sent else "not_sent", _clean(reply.get("reason", "?")), client.via))
    _tell(pamh, reply.get("message") or "could not send code", info=sent)


def _first_pass(text, digits):
    """(password, code) from a previous module's PAM_AUTHTOK: the code alone, or password+code."""
    bare = text.strip().replace("-", "").replace(" ", "")
    if bare.isascii() and bare.isdigit() and (len(bare) == 10 or len(bare) in digits):
        return "", text.strip()
    return split_code(text, digits)


def _verify(pamh, opts, client, log, where, context, user, state, split):
    """Ask about one code; (PAM code, reason)."""
    password, code = split
    if opts["forward_pass"] and password is not None:
        pamh.authtok = password
    head, reply = client.ask("verify", dict(context, user=user, code=code))
    if head != "ok":
        return _refused(pamh, log, where, reply), reply.get("reason")
    result = _decision(pamh, opts, state, reply)
    log(LOG_INFO if result == pamh.PAM_SUCCESS else LOG_NOTICE,
        "%s result=%s reason=%s via=%s" % (where, reply.get("result", "?"),
                                           _clean(reply.get("reason", "?")), client.via))
    _tell(pamh, reply.get("message", ""))
    return result, reply.get("reason")


def _decision(pamh, opts, state, reply):
    """The PAM code for a verify reply. Only an explicit accept with reason ok/exempt succeeds."""
    result, reason = reply.get("result"), reply.get("reason")
    if result == "accept":
        if reason in ("ok", "exempt"):
            return pamh.PAM_SUCCESS
        if reason == "no_device_allowed":
            return pamh.PAM_IGNORE
        return pamh.PAM_AUTH_ERR
    if reason == "locked":
        return pamh.PAM_MAXTRIES
    if reason == "no_device" and opts["nullok"] and state != "required":
        return pamh.PAM_IGNORE
    if reason == "error":
        return pamh.PAM_AUTHINFO_UNAVAIL
    return pamh.PAM_AUTH_ERR


def _refused(pamh, log, where, reply):
    reason = reply.get("reason", "?")
    log(LOG_ERR, "%s result=reject reason=%s: the daemon refused the request" % (
        where, _clean(reason)))
    _tell(pamh, reply.get("message", ""))
    if reason in ("busy", "error"):
        return pamh.PAM_AUTHINFO_UNAVAIL
    return pamh.PAM_AUTH_ERR


def pam_sm_authenticate(pamh, flags, argv):
    global _silent
    try:
        service = pamh.service
    except Exception:  # noqa: BLE001
        service = "?"

    def log(priority, message):
        _syslog(service, priority, message)

    try:
        _silent = bool(flags & pamh.PAM_SILENT)
        return _authenticate(pamh, argv, log)
    except _Misconfigured as exc:
        log(LOG_ERR, "refusing: %s" % exc)
        return pamh.PAM_AUTHINFO_UNAVAIL
    except _Unavailable as exc:
        log(LOG_ERR, "refusing: %s (fallback=deny)" % exc)
        return pamh.PAM_AUTHINFO_UNAVAIL
    except _Untrusted as exc:
        log(LOG_ERR, "refusing: untrusted server: %s" % exc)
        return pamh.PAM_AUTH_ERR
    except pamh.exception as exc:
        log(LOG_ERR, "refusing: conversation failed (%s)" % getattr(exc, "pam_result", exc))
        return pamh.PAM_CONV_ERR
    except Exception as exc:  # noqa: BLE001 - fail closed, one line, no traceback on the terminal
        log(LOG_ERR, "refusing: %s: %s" % (type(exc).__name__, _clean(exc, 1024)))
        return pamh.PAM_AUTHINFO_UNAVAIL
    except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt from a library
        log(LOG_ERR, "refusing: %s" % type(exc).__name__)
        return pamh.PAM_AUTH_ERR


def pam_sm_setcred(pamh, flags, argv):
    return pamh.PAM_SUCCESS
