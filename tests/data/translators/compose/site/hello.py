"""A tiny page for the corpus: answers every GET with a greeting."""

import http.server
import os


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = os.environ.get("GREETING", "hello").encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    address = (os.environ.get("POD_IP", "127.0.0.1"), int(os.environ.get("PORT", "8000")))
    http.server.ThreadingHTTPServer(address, Handler).serve_forever()
