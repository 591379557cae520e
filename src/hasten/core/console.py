"""Where users see things: logs and progress on stderr, results on stdout."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


# Results piped to a file or CI log get a wide table instead of rich's 80-column default.
PIPE_WIDTH = 150


@functools.cache
def stdout_console() -> Any:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, PIPE_WIDTH)
    return console
