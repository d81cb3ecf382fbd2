"""Rendering: the configuration HAProxy itself accepts, and the fd budget."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from gateway.planning import BackendSlot, build_layout
from gateway.rendering import RenderContext, plan_budget, render_config, render_map
from gateway.routes import Backend, Route


def layout_for(port_range=(30000, 30099)):
    routes = {
        "web": Route("web", 8080, "http", (Backend("127.0.0.5", 80), Backend("::1", 81))),
        "db": Route("db", 5432, "tcp", (Backend("localhost", 5432),), check=False),
        "in": Route("in", 30001, "http", (Backend("127.0.0.6", 80),), balance="leastconn"),
    }
    return build_layout(routes, port_range=port_range)


def context(tmp_path):
    return RenderContext(
        gateway_id="g1",
        address="127.0.0.9",
        socket=str(tmp_path / "s.sock"),
        map_path=str(tmp_path / "ports.map"),
        revision=42,
    )


def test_rendered_config_passes_haproxy_check(tmp_path):
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.fail("haproxy is not installed (Debian package haproxy)")
    layout = layout_for()
    config = render_config(layout, context(tmp_path), plan_budget(layout, limit=20000))
    (tmp_path / "ports.map").write_text(render_map(layout))
    (tmp_path / "haproxy.cfg").write_text(config)
    check = subprocess.run(
        [haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "revision 42" in config
    assert "bind 127.0.0.9:8080" in config and "bind 127.0.0.9:30000-30099" in config
    assert "server s2 [::1]:81 check" in config
    assert "server s1 localhost:5432\n" in config  # check: false
    assert "balance leastconn" in config
    assert render_map(layout) == "30001 pool_1\n"


def test_budget_fits_the_open_file_limit():
    small = layout_for(port_range=(30000, 30099))
    budget = plan_budget(small, limit=20000)
    assert budget.maxconn == 8000 and budget.unchecked_servers == 0
    assert all(budget.checked[b.name] == b.slots for b in small.pool)


def test_checks_go_to_serving_servers_first_when_descriptors_run_short():
    layout = layout_for(port_range=(20000, 37999))
    layout.pool += [
        BackendSlot(f"x{i}", "http", "roundrobin", True, 4, (Backend("127.0.0.7", 80),))
        for i in range(1000)
    ]
    limit = 20000
    budget = plan_budget(layout, limit=limit)
    listeners = len(layout.static) + 18000
    checks = sum(budget.checked.values())
    assert 2 * budget.maxconn + listeners + checks <= limit
    assert budget.unchecked_servers == 0
    assert all(budget.checked[f"x{i}"] >= 1 for i in range(1000))
    spares = [b for b in layout.pool if b.route is None and not b.name.startswith("x")]
    assert any(budget.checked[b.name] < b.slots for b in spares)
    tight = plan_budget(layout, limit=listeners + 600)
    assert tight.maxconn == 256 and tight.unchecked_servers > 0
