"""Helpers for the SGLang stand-in server (a test stand-in, not SGLang)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

STANDIN = Path(__file__).parent / "sglang_standin.py"


def standin_command(python: str = sys.executable) -> list[str]:
    """The command that plays ``python -m sglang.launch_server``."""
    return [python, str(STANDIN)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
