"""One exception hierarchy for the kit. Every message says what went wrong and what to do next.

Exit codes (the CLI's contract): 2 for bad input from the user, 1 for a failure of the outside
world (node down, gateway error, CID mismatch). Messages never contain secret values.
"""

from __future__ import annotations


class KitError(Exception):
    """Base of every error the kit raises on purpose."""

    exit_code = 1


class InputError(KitError):
    """The user gave something invalid: an argument, a config value, a file."""

    exit_code = 2


class ConfigError(InputError):
    """`agent.toml` is missing or invalid. The message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        where = key if key == "agent.toml" else f"agent.toml: {key}"
        super().__init__(f"{where}: {problem}")


class ExternalError(KitError):
    """Something outside the kit failed: a node, a gateway, a pinning service, a provider."""


class NodeUnavailable(ExternalError):
    """The IPFS node cannot be reached."""


class GatewayError(ExternalError):
    """A gateway answered with an error or something malformed."""


class PinningError(ExternalError):
    """A pinning backend refused or failed an operation."""


class CidMismatch(ExternalError):
    """Content does not hash to the CID it was supposed to have."""


class RuntimeFault(ExternalError):
    """A contract failed in the local runtime (throw, timeout, memory, invalid output)."""
