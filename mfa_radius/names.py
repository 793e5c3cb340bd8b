"""The user-name rule moved to mfa_radius.rules.names (with the other pure rules); this module
re-exports it for the callers that still import it from here."""

from .rules.names import *  # noqa: F403
