"""conf/mfa-radius.toml and README's reference stay in step with the config schema."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from mfa_radius import config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "conf" / "mfa-radius.toml"


def schema_keys() -> list[tuple[str, str]]:
    keys = []
    for section, cls in config.SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.name not in ("clients", "replies", "gateways", "upstream"):
                keys.append((section, f.name))
    return keys


def test_example_config_is_accepted_and_equals_the_defaults():
    cfg = config.load(str(EXAMPLE))
    defaults = config.Config(path=str(EXAMPLE))
    assert dataclasses.replace(cfg, path="") == dataclasses.replace(defaults, path="")


def test_example_config_names_every_setting():
    text = EXAMPLE.read_text()
    raw = tomllib.loads(text)
    missing = [f"{s}.{k}" for s, k in schema_keys() if k not in raw.get(s, {})]
    assert not missing, f"conf/mfa-radius.toml lacks {missing}"


def test_readme_reference_names_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [f"{s}.{k}" for s, k in schema_keys() if f"`{s}.{k}`" not in readme]
    for section in ("clients", "replies", "upstream"):
        if "`radius." + section + "`" not in readme:
            missing.append("radius." + section)
    assert not missing, f"README's configuration reference lacks {missing}"
