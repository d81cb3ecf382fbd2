"""HAProxy process handling: every started process is recorded at once, so an
agent that dies in the middle of a reload leaves nothing its successor misses."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from gateway.haproxy import HAProxy
from tests.support import free_port, fresh_address, wait_for


def config(haproxy: HAProxy, address: str, port: int) -> str:
    return (
        "global\n    maxconn 100\n"
        f"    stats socket {haproxy.socket_path} mode 600 level admin expose-fd listeners\n"
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n"
        "    timeout server 5s\n"
        f"frontend fe\n    bind {address}:{port}\n"
        '    http-request return status 200 content-type text/plain string "ok"\n'
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_successor_adopts_every_recorded_process(tmp_path: Path):
    address, port = fresh_address(), free_port()

    async def scenario() -> tuple[int, int, int]:
        first = HAProxy(tmp_path)
        await first.apply(config(first, address, port), "")
        started = first.pid
        assert started is not None
        # The agent dies right after spawning the next process, before it knew
        # whether that one came up: both pids are already on record.
        spawned = subprocess.Popen(
            [
                "haproxy",
                "-f",
                str(first.config_path),
                "-x",
                str(first.socket_path),
                "-sf",
                str(started),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        first._record([started, spawned.pid])
        successor = HAProxy(tmp_path)
        assert successor.adopt() == spawned.pid
        await successor.apply(config(successor, address, port), "")
        last = successor.pid
        assert last is not None
        await asyncio.to_thread(
            wait_for,
            lambda: not alive(spawned.pid) and not alive(started),
            timeout=20,
            what="the older processes to finish",
        )
        await successor.stop()
        spawned.wait()
        for child in list(first._children):  # reap what the dead agent had started
            await child.wait()
        await asyncio.sleep(0)
        return started, spawned.pid, last

    started, spawned, last = asyncio.run(scenario())
    assert len({started, spawned, last}) == 3
    assert not alive(last)


def test_a_process_that_was_a_standby_is_adopted_not_ended(tmp_path: Path):
    """A standby reads its configuration from the FIFO: once it serves, a
    successor adopts it like any other, and ends only standbys still waiting."""
    address, port = fresh_address(), free_port()

    async def scenario() -> tuple[int, int | None, bool, str]:
        first = HAProxy(tmp_path)
        await first.apply(config(first, address, port), "")
        await first.prepare_standby()
        await first.apply(config(first, address, port), "")
        serving = first.pid
        assert serving is not None
        command = Path(f"/proc/{serving}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        await first.prepare_standby()  # left waiting when the agent dies
        successor = HAProxy(tmp_path)
        adopted = successor.adopt()
        await asyncio.sleep(0.2)
        still = alive(serving)
        await successor.stop()
        for child in list(first._children):  # reap what the dead agent had started
            await child.wait()
        return serving, adopted, still, command

    serving, adopted, still, command = asyncio.run(scenario())
    assert ".cfg.fifo" in command
    assert adopted == serving
    assert still
    assert not alive(serving)


def test_a_process_spawned_just_before_the_agent_died_is_adopted(tmp_path: Path):
    """Killed between the spawn and the record: the process is found by the
    configuration its command line names."""
    address, port = fresh_address(), free_port()

    async def scenario() -> tuple[int, int | None, list[int]]:
        first = HAProxy(tmp_path)
        await first.apply(config(first, address, port), "")
        first._record([])  # as if the agent died before writing the pid file
        assert first.pid is not None
        successor = HAProxy(tmp_path)
        adopted = successor.adopt()
        recorded = successor._recorded()
        await successor.stop()
        for child in list(first._children):
            await child.wait()
        return first.pid, adopted, recorded

    started, adopted, recorded = asyncio.run(scenario())
    assert adopted == started
    assert recorded == [started]
    assert not alive(started)


def test_a_start_given_up_on_leaves_no_process(tmp_path: Path):
    """Processes start from a worker thread; an agent that stops while one
    starts (its flight cancelled) must not leave that process running
    unrecorded. Each round cancels a start at a different moment."""
    haproxy = HAProxy(tmp_path)
    fifo = tmp_path / "never-written.fifo"
    os.mkfifo(fifo)  # a process reading it waits for ever

    def waiting() -> list[int]:
        found = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    line = Path(f"/proc/{entry.name}/cmdline").read_bytes()
                except OSError:
                    continue
                if str(fifo).encode() in line and alive(int(entry.name)):
                    found.append(int(entry.name))
        return found

    async def scenario() -> None:
        for pause in (0, 0.0005, 0.001, 0.002, 0.005):
            spawn = asyncio.create_task(haproxy._spawn([haproxy.binary, "-f", str(fifo)]))
            await asyncio.sleep(pause)
            spawn.cancel()
            try:
                child = await spawn
            except asyncio.CancelledError:
                continue
            child.kill()  # too late to cancel: the caller has it and ends it
            await child.wait()

    asyncio.run(scenario())
    wait_for(lambda: not waiting(), timeout=5, what="the processes given up on to end")
