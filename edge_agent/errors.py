"""The edge agent's own exceptions, under one base class."""

from __future__ import annotations


class AgentError(Exception):
    """Base class of the errors the edge agent raises itself."""


class SettingsError(AgentError):
    """An EDGEPM_* environment variable is missing or invalid."""


class StoreError(AgentError):
    """The local SQLite store cannot be opened or written."""


class ModelUnavailableError(AgentError):
    """No valid model version could be loaded or downloaded."""


class UplinkError(AgentError):
    """A request to the control plane failed.

    Attributes:
        retryable: True when sending the same request later may succeed (connection
            refused, timeout, 5xx); False when the control plane rejected it (4xx).
        status: the HTTP status, or None when no response arrived.
    """

    def __init__(self, message: str, *, retryable: bool, status: int | None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class StoreReplacedError(UplinkError):
    """The control plane returned 409: it has this agent id with another store id."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False, status=409)
