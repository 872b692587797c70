"""Ending a daemon the tests started as a subprocess."""

from __future__ import annotations

import signal
import subprocess


def stop_process(
    process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 10
) -> int:
    """SIGTERM (the daemon's clean stop), SIGKILL if it does not end within
    ``timeout`` seconds; close its stdout pipe. Returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode
