"""A new-connection load generator, as a process.

`python -m tests.loadgen hammer HOST PORT SECONDS RATE` opens a new connection
per request at RATE requests per second for SECONDS, then prints JSON counts.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def one_request(host: str, port: int, timeout: float) -> str | None:
    """None on success, else what went wrong."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError) as exc:
        return f"connect: {type(exc).__name__}"
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), timeout)
        if not data.startswith(b"HTTP/1.1 200"):
            return f"status: {data[:40]!r}"
        return None
    except (TimeoutError, OSError) as exc:
        return f"read: {type(exc).__name__}"
    finally:
        writer.close()


async def hammer(host: str, port: int, seconds: float, rate: float) -> dict[str, object]:
    failures: dict[str, int] = {}
    done = 0
    pending: set[asyncio.Task[str | None]] = set()
    start = time.monotonic()
    sent = 0

    def finished(task: asyncio.Task[str | None]) -> None:
        nonlocal done
        pending.discard(task)
        done += 1
        error = task.result()
        if error:
            failures[error] = failures.get(error, 0) + 1

    while time.monotonic() - start < seconds:
        due = int((time.monotonic() - start) * rate)
        while sent < due and len(pending) < 2000:
            task = asyncio.create_task(one_request(host, port, 5.0))
            task.add_done_callback(finished)
            pending.add(task)
            sent += 1
        await asyncio.sleep(0.001)
    if pending:
        await asyncio.wait(pending)
    elapsed = time.monotonic() - start
    return {
        "requests": done,
        "failed": sum(failures.values()),
        "failures": failures,
        "seconds": round(elapsed, 3),
        "rate": round(done / elapsed, 1),
    }


def main() -> None:
    command, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if command == "hammer":
        result = asyncio.run(hammer(host, port, float(sys.argv[4]), float(sys.argv[5])))
        print(json.dumps(result))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
