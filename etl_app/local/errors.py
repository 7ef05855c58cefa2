"""The one error the embedded servers raise."""


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be started (the message says why and where its log is)."""
