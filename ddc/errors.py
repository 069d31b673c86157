"""Errors worded for the operator, in a module of their own so that any part of DDC can raise them without
importing what raises them elsewhere (the config schema, the compiled core)."""


class ConfigError(Exception):
    """A configuration problem, worded for the operator; str() is one line per problem."""
