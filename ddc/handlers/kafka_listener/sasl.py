"""SASL for the Kafka listener: PLAIN, and SCRAM-SHA-256/512 through scramp (RFC 5802's exchange, as Kafka's).

Users come from source.sasl.users_file or the environment variable
DDC_KAFKA_LISTENER_USERS, one `user:password` per line. SCRAM keys are derived
once at start-up, with a salt drawn then; a password is never logged, and a
failure names only the user.
"""

import hmac
import logging
import os

from scramp import ScramException, ScramMechanism

from ddc.errors import ConfigError

log = logging.getLogger("ddc.handlers.kafka_listener")

USERS_VARIABLE = "DDC_KAFKA_LISTENER_USERS"
SCRAM_ITERATIONS = 4096


def read_users(sasl, link_name: str) -> dict[str, str]:
    if sasl.users_file is not None:
        try:
            with open(sasl.users_file, encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"link {link_name}: source.sasl.users_file {sasl.users_file!r} cannot be read: "
                              f"{error}") from None
        where = sasl.users_file
    else:
        text = os.environ.get(USERS_VARIABLE, "")
        where = f"${USERS_VARIABLE}"
    users = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, separator, password = line.partition(":")
        if not separator or not user or not password:
            raise ConfigError(f"link {link_name}: line {number} of {where} is not `user:password`")
        users[user] = password
    if not users:
        raise ConfigError(f"link {link_name}: source.sasl has no users: put `user:password` lines in "
                          f"source.sasl.users_file or in {USERS_VARIABLE}")
    return users


class Authenticator:
    """One connection's authentication, one SaslAuthenticate token at a time."""

    @classmethod
    def factory(cls, sasl, link_name: str):
        users = read_users(sasl, link_name)
        scram = {}
        for mechanism in sasl.mechanisms:
            if mechanism.startswith("SCRAM"):
                scram_mechanism = ScramMechanism(mechanism)
                keys = {user: scram_mechanism.make_auth_info(password, iteration_count=SCRAM_ITERATIONS)
                        for user, password in users.items()}
                scram[mechanism] = (scram_mechanism, keys)
        if "PLAIN" in sasl.mechanisms:
            log.info(f"link {link_name}: SASL PLAIN sends passwords as they are: use it with TLS",
                     extra={"fields": {"link": link_name}})
        return lambda mechanism: cls(mechanism, users, scram.get(mechanism))

    def __init__(self, mechanism: str, users: dict, scram):
        self.mechanism = mechanism
        self._users = users
        self._server = None
        self._first_taken = False
        if scram is not None:
            scram_mechanism, keys = scram
            self._server = scram_mechanism.make_server(lambda user: keys[user] if user in keys else _unknown(user))

    def step(self, token: bytes) -> tuple[bytes, bool]:
        """The answer to the client's token, and whether authentication is complete. Raises PermissionError."""
        if self._server is None:
            return self._plain(token), True
        try:
            if not self._first_taken:
                self._first_taken = True
                self._server.set_client_first(token.decode("utf-8"))
                return self._server.get_server_first().encode(), False
            self._server.set_client_final(token.decode("utf-8"))
            return self._server.get_server_final().encode(), True
        except (ScramException, UnicodeDecodeError, KeyError) as error:
            raise PermissionError(f"{self.mechanism}: {_reason(error)}") from None

    def _plain(self, token: bytes) -> bytes:
        parts = token.split(b"\0")
        if len(parts) != 3:
            raise PermissionError("PLAIN: a malformed token")
        user = parts[1].decode("utf-8", "replace")
        if parts[0] and parts[0] != parts[1]:
            other = parts[0].decode("utf-8", "replace")
            raise PermissionError(f"PLAIN: user {user!r} may not act for another ({other!r})")
        expected = self._users.get(user)
        if expected is None or not hmac.compare_digest(parts[2], expected.encode("utf-8")):
            raise PermissionError(f"PLAIN: user {user!r} or its password is wrong")
        return b""


def _unknown(user: str):
    raise KeyError(f"user {user!r} is unknown")


def _reason(error: Exception) -> str:
    text = str(error.args[0]) if error.args else type(error).__name__
    return text.split("\n")[0]
