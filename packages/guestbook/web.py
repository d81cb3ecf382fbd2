"""Guestbook front end: an HTML page that lists and adds messages.

It finds the store through the Docker-link variables STORE_PORT_6379_TCP_ADDR
and STORE_PORT_6379_TCP_PORT that Marina sets for the `store` link.
"""

import html
import http.server
import os
import socket
import urllib.parse

TITLE = os.environ.get("PAGE_TITLE", "Guestbook")
STORE = (os.environ.get("STORE_PORT_6379_TCP_ADDR", "127.0.0.1"),
         int(os.environ.get("STORE_PORT_6379_TCP_PORT", "6379")))
HOSTNAME = os.environ.get("HOSTNAME", socket.gethostname())


def store(command: str) -> list[str]:
    with socket.create_connection(STORE, timeout=3) as conn:
        conn.sendall(command.encode() + b"\n")
        reader = conn.makefile("r", encoding="utf-8")
        if command.startswith("ADD "):
            return [reader.readline().strip()]
        lines = []
        for line in reader:
            if line.strip() == ".":
                break
            lines.append(line.rstrip("\n"))
        return lines


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status: int, body: str, content_type: str = "text/html") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Served-By", HOSTNAME)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self.reply(200, "ok\n", "text/plain")
            return
        try:
            messages = store("LIST")
        except OSError as exc:
            self.reply(503, f"store unavailable: {html.escape(str(exc))}\n", "text/plain")
            return
        items = "".join(f"<li>{html.escape(m)}</li>" for m in messages)
        self.reply(200, f"<!doctype html><title>{html.escape(TITLE)}</title>"
                        f"<h1>{html.escape(TITLE)}</h1><ul id=messages>{items}</ul>"
                        "<form method=post><label>Message <input name=message></label>"
                        f"<button>Sign</button></form><footer>{html.escape(HOSTNAME)}</footer>")

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), 4096)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        message = " ".join(form.get("message", [""])[0].split())
        if message:
            try:
                store("ADD " + message)
            except OSError as exc:
                self.reply(503, f"store unavailable: {html.escape(str(exc))}\n", "text/plain")
                return
        self.send_response(303)
        self.send_header("Location", "/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


if __name__ == "__main__":
    host = os.environ.get("POD_IP", "127.0.0.1")
    Server((host, int(os.environ.get("WEB_PORT", "8080"))), Handler).serve_forever()
