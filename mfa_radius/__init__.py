"""mfa-radius: a second factor (TOTP/HOTP tokens, SMS) for Linux logins and VPNs."""

__version__ = "0.1.0"
