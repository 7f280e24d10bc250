#!/usr/bin/env python3
"""A Confidant holder (wallet) in Python, on the generated bindings.

It does what the Rust holder (examples/holder) does, through
confidant-ffi: accepts an issuer's invitation, refuses a bundle whose
identity key is not the invitation's, stores each credential it receives in
an SQLite file of its own (durably, before acknowledging it to the node),
acknowledges it, and answers the issuer.

    holder.py --data-dir DIR accept (--invitation TEXT | --invitation-file PATH)
              [--greeting TEXT] [--exit-after-credentials N] [--at-rest-key-file PATH]
    holder.py --data-dir DIR run [--exit-after-credentials N] [--at-rest-key-file PATH]
    holder.py --data-dir DIR list

It needs only the Python standard library and the bindings that
`./scripts/bindings.sh` generates into bindings/python (with the shared
library copied beside them); CONFIDANT_PYTHON_BINDINGS names another
directory holding them.

One line per step on stdout (tests read them):

    holder identity key: HEX (fingerprint DDDDD DDDDD DDDDD DDDDD)
    invitation: connector URL, issuer identity key HEX (fingerprint …)
    joined connection ID
    waiting for the issuer
    REFUSED bundle on connection ID: KIND: DETAIL     (a swapped bundle: IDENTITY_MISMATCH)
    connected: connection ID, issuer identity key HEX (fingerprint …)
    credential received on connection ID (message #SEQ): JSON
    credential received again on connection ID (message #SEQ): already stored
    message #SEQ on connection ID is not a JSON credential; ignored
    acknowledged message #SEQ
    replied on connection ID: received credential HASH
    exiting after N credentials
    SIGTERM: shutting down

An unusable invitation is refused before anything is written, with its
kind on stderr (`invalid invitation (DAMAGED): …`) and exit code 2; other
errors exit with code 1.
"""

import argparse
import asyncio
import atexit
import hashlib
import json
import os
import signal
import sqlite3
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BINDINGS = os.environ.get(
    "CONFIDANT_PYTHON_BINDINGS",
    os.path.join(HERE, "..", "..", "bindings", "python"),
)
sys.path.insert(0, BINDINGS)

import confidant_ffi as confidant  # noqa: E402  (generated; needs the path above)

# Before the interpreter finalizes, the library stops calling into Python
# and waits for the calls in progress on its threads (CPython would kill
# such a thread, which aborts the process). See docs/bindings.md.
atexit.register(confidant.stop_callbacks)

CREDENTIALS = "credentials.sqlite3"
CONNECTOR_URL = "connector.url"


def say(line):
    print(line, flush=True)


class Credentials:
    """The credentials received and the answers still owed for them.

    A credential is stored under (connection id, inbox number) together with
    the answer it owes, in one durable commit, before it is acknowledged to
    the node: a crash in between reports it again under the same number, and
    it is stored once. The same JSON on the same connection (an issuer that
    sent it again after a crash) is also stored once.
    """

    def __init__(self, path):
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS credential (
                connection_id TEXT NOT NULL,
                sequence INTEGER NOT NULL,
                json TEXT NOT NULL,
                PRIMARY KEY (connection_id, sequence),
                UNIQUE (connection_id, json)
            );
            CREATE TABLE IF NOT EXISTS owed_reply (
                connection_id TEXT NOT NULL,
                sequence INTEGER NOT NULL,
                text TEXT NOT NULL,
                PRIMARY KEY (connection_id, sequence)
            );
            """
        )
        self.db.commit()

    def store(self, connection_id, sequence, credential, reply):
        """Stores the credential and its owed answer; False if already stored."""
        with self.db:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO credential VALUES (?, ?, ?)",
                (connection_id, sequence, credential),
            )
            if cursor.rowcount == 0:
                return False
            self.db.execute(
                "INSERT OR IGNORE INTO owed_reply VALUES (?, ?, ?)",
                (connection_id, sequence, reply),
            )
            return True

    def owed_replies(self):
        return self.db.execute(
            "SELECT connection_id, sequence, text FROM owed_reply ORDER BY rowid"
        ).fetchall()

    def reply_sent(self, connection_id, sequence):
        with self.db:
            self.db.execute(
                "DELETE FROM owed_reply WHERE connection_id = ? AND sequence = ?",
                (connection_id, sequence),
            )

    def all(self):
        return self.db.execute(
            "SELECT connection_id, sequence, json FROM credential ORDER BY rowid"
        ).fetchall()


def short_hash(text):
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def write_atomically(path, text):
    temporary = path + ".tmp"
    with open(temporary, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def read_key(path):
    if path is None:
        return None
    with open(path, "rb") as file:
        return file.read()


class Holder:
    def __init__(self, node, credentials, exit_after):
        self.node = node
        self.credentials = credentials
        self.exit_after = exit_after
        self.handled = 0

    async def send_owed_replies(self):
        for connection_id, sequence, text in self.credentials.owed_replies():
            await self.node.send(connection_id, text.encode())
            self.credentials.reply_sent(connection_id, sequence)
            say(f"replied on connection {connection_id}: {text}")

    async def on_message(self, event):
        connection_id, sequence = event.connection_id, event.sequence
        try:
            credential = event.message.decode()
            json.loads(credential)
        except ValueError:
            say(f"message #{sequence} on connection {connection_id} is not a JSON credential; ignored")
            await self.node.acknowledge([sequence])
            say(f"acknowledged message #{sequence}")
            return False
        reply = f"received credential {short_hash(credential)}"
        if self.credentials.store(connection_id, sequence, credential, reply):
            say(f"credential received on connection {connection_id} (message #{sequence}): {credential}")
        else:
            say(f"credential received again on connection {connection_id} (message #{sequence}): already stored")
        await self.node.acknowledge([sequence])
        say(f"acknowledged message #{sequence}")
        await self.send_owed_replies()
        self.handled += 1
        if self.exit_after is not None and self.handled >= self.exit_after:
            plural = "" if self.handled == 1 else "s"
            say(f"exiting after {self.handled} credential{plural}")
            return True
        return False

    async def handle(self, event):
        """Handles one event; True when it is time to exit."""
        if event.is_handshake_failed():
            say(f"REFUSED bundle on connection {event.connection_id}: {event.kind.name}: {event.message}")
        elif event.is_connected():
            say(
                f"connected: connection {event.connection_id}, issuer identity key "
                f"{bytes(event.peer_identity_key).hex()} (fingerprint {event.peer_fingerprint})"
            )
        elif event.is_message_received():
            return await self.on_message(event)
        elif event.is_delivery_dropped():
            say(f"dropped a delivery on connection {event.connection_id}: {event.reason}")
        else:
            say(f"event: {event}")
        return False

    async def run(self, stop):
        await self.send_owed_replies()
        say("waiting for the issuer")
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                next_event = asyncio.ensure_future(self.node.next_event())
                done, _ = await asyncio.wait(
                    {next_event, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                if next_event not in done:
                    # Cancelling the wait loses no event.
                    next_event.cancel()
                    say("SIGTERM: shutting down")
                    return
                event = next_event.result()
                if event is None:
                    raise RuntimeError("the node stopped unexpectedly")
                if await self.handle(event):
                    return
        finally:
            stopping.cancel()


async def start(data_dir, url, key_file):
    node = await confidant.open_node(
        confidant.NodeOptions(
            data_dir=data_dir,
            connector_urls=[url],
            at_rest_key=read_key(key_file),
            connector_ca_pem=None,
        )
    )
    say(f"holder identity key: {bytes(node.identity_key()).hex()} (fingerprint {node.fingerprint()})")
    return node


async def main_async(args):
    os.makedirs(args.data_dir, mode=0o700, exist_ok=True)
    if args.command == "list":
        rows = Credentials(os.path.join(args.data_dir, CREDENTIALS)).all()
        say(f"{len(rows)} credential{'' if len(rows) == 1 else 's'} stored")
        for connection_id, sequence, credential in rows:
            say(f"credential on connection {connection_id} (message #{sequence}): {credential}")
        return
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    url_path = os.path.join(args.data_dir, CONNECTOR_URL)
    if args.command == "accept":
        text = args.invitation
        if text is None:
            with open(args.invitation_file) as file:
                text = file.read()
        # Checked before anything is written or the token is spent.
        info = confidant.parse_invitation(text)
        say(
            f"invitation: connector {info.connector_url}, issuer identity key "
            f"{bytes(info.inviter_identity_key).hex()} (fingerprint {info.inviter_fingerprint})"
        )
        url = info.connector_url
    else:
        with open(url_path) as file:
            url = file.read().strip()
    credentials = Credentials(os.path.join(args.data_dir, CREDENTIALS))
    node = await start(args.data_dir, url, args.at_rest_key_file)
    try:
        if args.command == "accept":
            connection_id = await node.accept_invitation(text, args.greeting.encode())
            write_atomically(url_path, url)
            say(f"joined connection {connection_id}")
        else:
            for connection in await node.connections():
                say(f"connection {connection.connection_id}: {connection.state.name}")
        await Holder(node, credentials, args.exit_after_credentials).run(stop)
    finally:
        await node.shutdown()


def main():
    parser = argparse.ArgumentParser(description="A Confidant holder on the Python bindings")
    parser.add_argument("--data-dir", required=True)
    commands = parser.add_subparsers(dest="command", required=True)
    accept = commands.add_parser("accept", help="accept an invitation, then wait for credentials")
    source = accept.add_mutually_exclusive_group(required=True)
    source.add_argument("--invitation")
    source.add_argument("--invitation-file")
    accept.add_argument("--greeting", default="hello from the python holder")
    run = commands.add_parser("run", help="continue the existing connections")
    for command in (accept, run):
        command.add_argument("--exit-after-credentials", type=int)
        command.add_argument("--at-rest-key-file", help="32-byte key sealing the node's store")
    commands.add_parser("list", help="list the stored credentials")
    args = parser.parse_args()
    code = 0
    try:
        asyncio.run(main_async(args))
    except confidant.ConfidantError.InvalidInvitation as error:
        print(f"invalid invitation ({error.kind.name}): {error.message}", file=sys.stderr)
        code = 2
    except confidant.ConfidantError as error:
        print(f"error ({type(error).__name__}): {error}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
