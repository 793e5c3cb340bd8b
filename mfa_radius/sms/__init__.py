"""SMS codes: policy (codes, hashes, limits, the message), gateways (file, http, twilio, command)
and the service the fronts and the CLI call.

Importing this package is cheap (the PAM fallback path imports the verifier, which imports the
policy); the gateways and their HTTP client are imported only when a message is sent.
"""
