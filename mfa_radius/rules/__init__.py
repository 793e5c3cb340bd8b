"""The rules, as pure functions of plain data: no I/O, no clock, no database, no logging.

- `names`: the one user-name rule (canonical form, realms, case folding);
- `access`: exemption, privilege and nullok, given a user's groups;
- `lockout`: when consecutive failures lock a user, and for how long;
- `sms`: phone numbers, SMS codes and their hashes, the message, who may get a code and when.

The verifier, both fronts (RADIUS, PAM), the CLI and the config loader apply them; hypothesis tests
them on generated data. A module here imports nothing of the project but other rules and
mfa_radius.errors (tests/test_import_graph.py).
"""
