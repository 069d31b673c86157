"""Configuration: one TOML file per proxy, overridable from the environment.

The file's `role` picks the schema (IngressSettings or EgressSettings), so a key
that only makes sense on the other side is an error, not silently ignored. Links
are a table keyed by link name so that every value has a stable path an
environment variable can reach: `links.syslog.transport.rate` is
`DDC_LINKS__SYSLOG__TRANSPORT__RATE`. Every problem becomes a ConfigError whose
lines each name the key path, the offending value and what is allowed.

The sections live with what they configure: values.py (addresses, sizes, durations), transport.py, links.py,
each handler's config.py under ddc/handlers/, the filters' and telemetry's in their packages.

This package's names load on first use: a handler's config (ddc/handlers/NAME/config.py) imports the building
blocks in values.py, and the settings compose every registered handler's config, so importing them here at once
would run in a circle.
"""

import importlib

from ddc.errors import ConfigError

_HOMES = {"load_settings": "loading", "settings_from_mapping": "loading", "resolved_view": "loading",
          "mask_secrets": "loading", "is_secret": "loading", "Settings": "loading",
          "IngressSettings": "links", "EgressSettings": "links", "Endpoint": "values", "parse_endpoint": "values"}
__all__ = ["ConfigError", *_HOMES]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'ddc.config' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ddc.config.{_HOMES[name]}"), name)
