"""The daemon's life cycle as a service manager sees it: readiness, start and stop lines."""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.milterproc import MilterProcess
from harness.postfix import Postfix
from harness.sink import Sink
from postwarden import __version__, sdnotify


@pytest.fixture
def notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(20)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))  # inherited by the daemon
    yield s
    s.close()


def test_notify_without_a_manager_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    assert sdnotify.notify("READY=1") is False  # a gone manager is not fatal


def test_abstract_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"postwarden-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("READY=1")
        assert s.recv(100) == b"READY=1"


@pytest.mark.e2e
def test_ready_after_listening_then_start_and_stop_lines(
        notify: socket.socket, postfix: Postfix, sink: Sink,
        start_milter: Callable[..., MilterProcess]) -> None:
    milter = start_milter()
    first = notify.recv(4096).decode().split("\n")
    assert "READY=1" in first
    assert milter.socket_path.exists()  # READY came after the socket listened
    start = milter.wait_line(r"starting postwarden ")
    assert re.search(rf"starting postwarden {re.escape(__version__)}: mode=monitor, "
                     rf"socket=unix:{re.escape(str(milter.socket_path))}, store=sqlite", start)

    for i in range(2):
        mid = f"{uuid.uuid4().hex}@example.com"
        postfix.sendmail(f"From: <www@example.com>\nTo: <bob@example.net>\nSubject: {i}\n"
                         f"Message-ID: <{mid}>\n\nhi\n".encode(), "www@example.com",
                         ["bob@example.net"])
        milter.wait_summary(postfix.queue_id_for(mid))
    sink.wait_for(2)

    milter.hup()
    states = [notify.recv(4096).decode(), notify.recv(4096).decode()]
    assert states == ["RELOADING=1", "READY=1"]
    assert milter.stop() == 0
    assert notify.recv(4096) == b"STOPPING=1"
    assert milter.lines()[-1].endswith("stopped after 2 messages")
