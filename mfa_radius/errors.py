"""Exceptions that reach an admin as one clear line (never a traceback)."""


class MfaError(Exception):
    """Base class: the message is what the admin reads."""

    exit_code = 1


class ConfigError(MfaError):
    """The configuration file is missing, malformed or has a wrong/unknown key."""

    exit_code = 2


class KeyFileError(MfaError):
    """The sealing key file is missing, unreadable, malformed or too open."""

    exit_code = 2


class StoreError(MfaError):
    """The database is missing, corrupt, read-only or full."""

    exit_code = 2


class TransactionLost(StoreError):
    """SQLite abandoned a whole transaction: none of its writes can be committed."""


class DeviceError(MfaError):
    """A device lifecycle operation was refused (bad serial, wrong codes, ...)."""


class ImportFormatError(MfaError):
    """A seed file (CSV or PSKC) could not be imported; nothing was written.

    `lines`, when given: the message as the admin reads it, a summary then one line per problem.
    """

    def __init__(self, message: str, lines: list[str] | None = None):
        super().__init__(message)
        self.lines = lines


class SettingError(ValueError):
    """A value refused by the validator of the part that owns it (a RADIUS client, a reply): `key`
    names the setting inside its entry; the message says what is wrong, without a place. The
    config loader turns it into a ConfigError naming file:line:key."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
