"""A new package to start from (`marina package init`) and the offline check
of one (`marina package lint`), which runs the upload's own validation."""

from __future__ import annotations

from pathlib import Path

from catalog.errors import Problem, ValidationFailed
from catalog.packages import NAME_RE, lint_package

MANIFEST = """\
format: marina/1
name: {name}
title: {title}
version: "0.1.0"
description: >-
  {title}: a web page served by one pod behind the cluster's gateways.
class: KubernetesApplication
properties:
  type: object
  additionalProperties: false
  properties:
    greeting:
      type: string
      title: Greeting on the page
      minLength: 1
      maxLength: 80
      default: Hello from {name}
    publicPort:
      type: integer
      title: Public port on the gateways
      minimum: 1024
      maximum: 65535
      default: 30090
    replicas:
      type: integer
      title: Replicas
      minimum: 1
      maximum: 10
      default: 1
ui:
  order: [greeting, publicPort, replicas]
template:
  pods:
    - name: {name}
      replicas: "${{replicas}}"
      labels: {{app: {name}}}
      containers:
        - name: web
          image: python:3.11-slim
          command: [python3, "${{package}}/app.py"]
          env: {{GREETING: "${{greeting}}", WEB_PORT: "8080"}}
          ports: [{{containerPort: 8080}}]
          readiness:
            command: [python3, "${{package}}/app.py", "--check"]
          cores: 0.1
          memory: 64
      services:
        - {{name: {name}, port: "${{publicPort}}", targetPort: 8080, scope: public}}
"""

APP = '''\
"""The web page of this package: GREETING on POD_IP:WEB_PORT.

Marina gives every replica its own address in POD_IP; listen there.
With --check it is the readiness check: the page answers.
"""

import http.server
import os
import sys
import urllib.request

ADDRESS = (os.environ.get("POD_IP", "127.0.0.1"), int(os.environ.get("WEB_PORT", "8080")))


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (os.environ.get("GREETING", "Hello") + "\\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        urllib.request.urlopen("http://%s:%d/" % ADDRESS, timeout=2).read()
    else:
        http.server.ThreadingHTTPServer(ADDRESS, Page).serve_forever()
'''


def init_package(name: str, folder: Path) -> list[Path]:
    """Write a new package `name` into `folder` (made if missing, refused if it
    holds anything); the files written."""
    problems = []
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        problems.append(
            Problem(
                "name",
                "must be 1-63 lower-case letters, digits or '-', starting and ending alphanumeric",
                name,
            )
        )
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        problems.append(Problem("folder", "must be a new or empty folder", str(folder)))
    if problems:
        raise ValidationFailed(f"package {name}", problems)
    title = name.replace("-", " ").capitalize()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file, text in (
        ("manifest.yaml", MANIFEST.format(name=name, title=title)),
        ("app.py", APP),
    ):
        (folder / file).write_text(text)
        written.append(folder / file)
    return written


def lint(path: Path) -> list[Problem]:
    """Every problem an upload would report, read from a folder or a zip."""
    if not path.exists():
        return [Problem(str(path), "does not exist")]
    return lint_package(path)
