"""Run a command on a pseudo-terminal, as a person at a terminal would see it."""

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time


def run_in_pty(argv: list[str], timeout: float = 600, **kwargs) -> str:
    """Run ``argv`` with stdin, stdout and stderr on a pseudo-terminal; returns what it wrote."""
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 rows, 120 columns
    proc = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, close_fds=True, **kwargs)
    os.close(child)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not select.select([parent], [], [], 1.0)[0]:
            continue
        try:
            data = os.read(parent, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    else:
        proc.kill()
    os.close(parent)
    assert proc.wait(timeout=timeout) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")
