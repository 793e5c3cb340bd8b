"""SMS codes, the I/O half: issuing a code (issuer), the gateways (file, http, twilio, command, each
owning its settings) and the service the fronts and the CLI call. The rules (codes, hashes,
limits, the message, who may get a code) are mfa_radius.rules.sms.

The config loader imports the gateways' settings on every load, the PAM fallback's too: their
HTTP client and subprocess are imported only when a message is sent.
"""
