"""The trust chain's one error: a check that failed, naming the field or step."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kit.errors import ExternalError


class NotVerified(ExternalError):
    """A proof, an attestation or a quote did not verify (exit 1); `field` names what failed."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"not verified: {field}: {problem}")


@contextmanager
def refusals() -> Iterator[None]:
    """Turn the shared verifier's ProofError (kit.trust.core) into NotVerified."""
    from kit.trust.core import ProofError

    try:
        yield
    except ProofError as exc:
        raise NotVerified(exc.field, exc.problem) from None
