"""mfa-radius PAM module: a verification-code step for any PAM service, loaded by pam_python.so.

    auth required pam_python.so /opt/mfa-radius/pam_module/pam_mfa.py [options]

Options (google-authenticator-libpam names where the meaning is the same):
    socket=PATH         the daemon's socket for callers other than root (default
                        /run/mfa-radius/pam.sock)
    root_socket=PATH    the daemon's socket for root callers, in a root-only directory (default:
                        root/ beside socket=, /run/mfa-radius/root/pam.sock)
    daemon_user=NAME    the daemon runs as NAME, not root: its sockets may be NAME's
    config=FILE         config for the in-process fallback (default /etc/mfa-radius/mfa-radius.toml;
                        never from the environment, which in sudo and su is the caller's)
    fallback=local|deny socket unavailable: verify in-process (default) or refuse
    venv=DIR            virtualenv holding mfa_radius for the fallback (default: the .venv next
                        to this file's directory, or that directory itself if it is a venv;
                        then the system path); as root, it must be root's and not writable by
                        group or others, up to /
    nullok              a user with no device gets PAM_IGNORE (never PAM_SUCCESS); users the
                        policy requires a code from (privileged ones) are still refused
    prompt=TEXT         the prompt (default "Verification code: "); underscores read as spaces
    forward_pass        one prompt "Password & verification code: "; the code is split off the
                        end and the rest is set as PAM_AUTHTOK for the next module
    try_first_pass      take the code (or password+code) from PAM_AUTHTOK, prompt if it fails
    use_first_pass      take it from PAM_AUTHTOK, never prompt
    echo_verification_code   echo the code as it is typed
    debug               log each step to syslog (never the code)

pam_python compiles this file from source for every PAM handle, so it stays this small: the code is
in pam_mfa_impl.py next to it, imported from its precompiled __pycache__ (docs/ssh.md).
"""

import sys

_here = globals().get("__file__", "").rpartition("/")[0]
if _here.startswith("/") and _here not in sys.path:
    # Appended, not prepended: nothing here can shadow a standard module.
    sys.path.append(_here)

from pam_mfa_impl import pam_sm_authenticate, pam_sm_setcred  # noqa: E402,F401
