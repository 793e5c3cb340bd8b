"""The TOML configuration: typed sections, validated once, errors that name file, line and key.

    from mfa_radius import config
    cfg = config.load("/etc/mfa-radius/mfa-radius.toml")

- `schema`: the sections as frozen dataclasses, defaults and bounds (the SMS gateways' entries
  are sms/gateways.py's);
- `loader`: TOML into the dataclasses, unknown keys and wrong types refused;
- `checks`: what the values mean together, and the checks each part owns for its settings;
- `lines`: where a key is written (FILE:LINE for every error and warning);
- `warn`: accepted settings that weaken security.
"""

from __future__ import annotations

from ..errors import SettingError
from .loader import from_dict, load
from .schema import (DEFAULT_PATH, ENV_VAR, SECTIONS, Config, MetricsConfig, OtpConfig,
                     PamConfig, PolicyConfig, RadiusClient, RadiusConfig, RadiusReply,
                     RadiusUpstream, SmsConfig,
                     SmsGateway, StorageConfig, describe, gateway_name, resolve_path)
from .warn import MAX_QUIET_LOCKOUT_FAILURES, MIN_SECRET_CHARS, WIDE_PREFIX, warnings

__all__ = ["DEFAULT_PATH", "ENV_VAR", "SECTIONS", "Config", "MetricsConfig", "OtpConfig",
           "PamConfig", "PolicyConfig", "RadiusClient", "RadiusConfig", "RadiusReply",
           "RadiusUpstream", "SettingError", "SmsConfig", "SmsGateway", "StorageConfig",
           "describe", "from_dict",
           "gateway_name", "load", "resolve_path", "warnings", "MIN_SECRET_CHARS",
           "MAX_QUIET_LOCKOUT_FAILURES", "WIDE_PREFIX"]
