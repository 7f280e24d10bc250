#!/usr/bin/env python3
"""The Python side of confidant-bench's `python` section: a holder on the
generated bindings (confidant_ffi, the same library a Rust app links),
driven by the bench over stdin/stdout, one command per line:

    accept TEXT            accept the invitation TEXT  -> "joined ID"
    wait-connected N       wait for N Connected events -> "connected"
    send COUNT LEN         send COUNT messages of LEN bytes on every joined
                           connection: one after the other on each
                           connection, the connections at once (what the
                           bench's Rust holders do)  -> "sent"
    quit                   shut the node down          -> "bye"

Usage: bench_holder.py DATA_DIR CONNECTOR_URL. The bindings are found in
CONFIDANT_PYTHON_BINDINGS (the bench sets it). Errors go to stderr and end
the process with code 1.
"""

import asyncio
import atexit
import os
import sys

sys.path.insert(0, os.environ.get("CONFIDANT_PYTHON_BINDINGS", "bindings/python"))

import confidant_ffi as confidant  # noqa: E402  (generated; needs the path above)

# See docs/bindings.md, "Exiting a Python program".
atexit.register(confidant.stop_callbacks)


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def send_on(node, connection_id, count, message):
    for _ in range(count):
        await node.send(connection_id, message)


async def main(data_dir, url):
    loop = asyncio.get_running_loop()
    node = await confidant.open_node(
        confidant.NodeOptions(
            data_dir=data_dir,
            connector_urls=[url],
            at_rest_key=None,
            connector_ca_pem=None,
        )
    )
    connections = []
    connected = 0
    try:
        say("ready")
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            command, _, rest = line.strip().partition(" ")
            if command == "accept":
                connections.append(await node.accept_invitation(rest, b"hi"))
                say(f"joined {connections[-1]}")
            elif command == "wait-connected":
                wanted = int(rest)
                while connected < wanted:
                    event = await node.next_event()
                    if event is None:
                        raise RuntimeError("the node stopped")
                    if event.is_handshake_failed():
                        raise RuntimeError(f"a handshake failed: {event.kind.name}")
                    if event.is_connected():
                        connected += 1
                say("connected")
            elif command == "send":
                count, length = (int(word) for word in rest.split())
                message = b"a" * length
                await asyncio.gather(
                    *(send_on(node, connection, count, message) for connection in connections)
                )
                say("sent")
            elif command == "quit":
                return
            else:
                raise RuntimeError(f"unknown command {command!r}")
    finally:
        await node.shutdown()
        say("bye")


if __name__ == "__main__":
    code = 0
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2]))
    except Exception as error:  # noqa: BLE001  (reported to the bench)
        print(f"bench_holder: {type(error).__name__}: {error}", file=sys.stderr)
        code = 1
    sys.exit(code)
