"""Reading a proxy's config: TOML, the environment over it, the role's schema, and errors worded per key."""

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ddc.config.links import ENV_PREFIX, EgressSettings, IngressSettings, _reading_environment
from ddc.errors import ConfigError

# librdkafka properties that hold key material or credentials: *.pem (ssl.key.pem), sasl.oauthbearer.config and
# .extensions (client secrets), sasl.jaas.config (Java clients' credentials).
SECRET_KEY_PATTERN = re.compile(r"(password|passphrase|secret|token|private|credential|(^|[._])key$|key_?file|"
                                r"\.pem$|oauthbearer\.(config|extensions)$|jaas)", re.IGNORECASE)


Settings = IngressSettings | EgressSettings


def is_secret(key: str) -> bool:
    return bool(SECRET_KEY_PATTERN.search(key))


def mask_secrets(value: Any, key: str = "") -> Any:
    """A copy of a config tree with every secret-looking value replaced by '***'."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if key and is_secret(key) and value not in (None, ""):
        return "***"
    return value


TAGGED_SECTIONS = ("source", "sink")


def _user_location(location: tuple) -> tuple:
    """The key path as the user wrote it: pydantic adds the handler type after source/sink."""
    parts = list(location)
    return tuple(part for index, part in enumerate(parts)
                 if not (index > 0 and parts[index - 1] in TAGGED_SECTIONS and isinstance(part, str)
                         and index < len(parts) - 1))


def _describe(error: dict) -> str:
    kind = error["type"]
    loc = _user_location(error["loc"]) if kind != "union_tag_invalid" else tuple(error["loc"]) + ("type",)
    location = ".".join(str(part) for part in loc) or "(top level)"
    leaf = str(loc[-1]) if loc else ""
    shown = "***" if is_secret(leaf) else repr(mask_secrets(error.get("input")))
    if kind == "union_tag_invalid":
        context = error.get("ctx", {})
        return f"{location}: {context.get('tag')!r} is not a known type; use one of {context.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"{'.'.join(str(part) for part in loc + ('type',))}: required key is missing"
    if kind == "missing":
        return f"{location}: required key is missing"
    if kind == "extra_forbidden":
        return f"{location}: unknown key (value {shown}); check its spelling and docs/configuration.md"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "value_error":
        return f"{location}: {message}"
    return f"{location}: {message} (got {shown})"


def settings_from_mapping(data: dict, origin: str = "config") -> Settings:
    """Validates an already-parsed config tree; the environment still overrides it."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the configuration must be a table of keys")
    role = os.environ.get(f"{ENV_PREFIX}ROLE", data.get("role"))
    if role == "ingress":
        model = IngressSettings
    elif role == "egress":
        model = EgressSettings
    elif role is None:
        raise ConfigError(f'{origin}: role: required key is missing; set role = "ingress" or role = "egress"')
    else:
        raise ConfigError(f'{origin}: role: {role!r} is not a role; set role = "ingress" or role = "egress"')
    if any(key.upper().startswith(ENV_PREFIX) for key in os.environ):
        model = _reading_environment(model)
    try:
        return model(**data)
    except ValidationError as error:
        raise ConfigError("\n".join(f"{origin}: {_describe(e)}" for e in error.errors())) from None
    except ValueError as error:  # pydantic-settings' SettingsError: a DDC_ variable it cannot read
        raise ConfigError(f"{origin}: the {ENV_PREFIX}* environment variables: {error}") from None


def load_settings(path: str | os.PathLike) -> Settings:
    """Reads, parses and validates a proxy's config file; raises ConfigError on any problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read config file {str(path)!r}: {error.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return settings_from_mapping(data, str(path))


def resolved_view(settings: Settings) -> dict:
    """The validated config with units resolved to numbers and secrets masked, for `ddc check`."""
    return mask_secrets(settings.model_dump(mode="json"))
