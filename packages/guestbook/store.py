"""Guestbook back end: keeps messages in memory, speaks a line protocol.

`ADD <text>` appends a message, `LIST` returns them one per line, then `.`.
"""

import os
import socketserver

MESSAGES: list[str] = []


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for raw in self.rfile:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("ADD "):
                MESSAGES.append(line[4:][:500])
                self.wfile.write(b"OK\n")
            elif line == "LIST":
                for message in MESSAGES[-100:]:
                    self.wfile.write(message.encode() + b"\n")
                self.wfile.write(b".\n")
            else:
                self.wfile.write(b"ERR unknown command\n")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    host = os.environ.get("POD_IP", "127.0.0.1")
    with Server((host, int(os.environ.get("STORE_PORT", "6379"))), Handler) as server:
        server.serve_forever()
