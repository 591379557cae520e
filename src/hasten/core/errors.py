"""The one error type users see: what was wrong, and how to fix it."""

from __future__ import annotations


class HastenError(Exception):
    """A user-facing error whose message says what was expected, what came, and how to fix it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")


class MissingDependencyError(HastenError):
    """An optional package is needed; the message names the pip extra that installs it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package '{package}', which is not installed.",
            hint=f"install it with: pip install 'hasten[{extra}]'",
        )
