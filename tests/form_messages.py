"""Building Message objects for the form and rate-limit unit tests."""

from __future__ import annotations

from postwarden.message import Message, Origin


def postfix_received(uid: int, queue_id: str) -> str:
    return (f" by mail.example.com (Postfix, from userid {uid})\r\n\tid {queue_id}; "
            "Tue,  1 Dec 2026 11:00:00 +0000 (UTC)")


def form_message(
    body: str = "Hello,\nplease call me back about the offer.\n",
    *,
    origin: Origin = Origin.LOCAL,
    script: str | None = "33:contact.php",
    sender: str = "www-data@mail.example.com",
    from_: str = "Contact form <noreply@example.com>",
    rcpts: list[str] | None = None,
    auth_user: str = "",
    client_addr: str = "127.0.0.1",
    client_port: int = 0,
    extra: list[tuple[str, str]] | None = None,
    queue_id: str = "4F9D42A0B1",
    uid: int | None = 33,
) -> Message:
    """Local mail carries the Received header Postfix's pickup puts on top (uid 33 is
    www-data on Debian); `uid=None` leaves it out."""
    headers: list[tuple[str, str]] = []
    if origin is Origin.LOCAL and uid is not None:
        headers.append(("Received", postfix_received(uid, queue_id)))
    if script is not None:
        headers.append(("X-PHP-Originating-Script", f" {script}"))
    headers += [("From", f" {from_}"), ("To", " owner@example.com"),
                ("Subject", " Contact request"), *(extra or [])]
    return Message(queue_id=queue_id, origin=origin, client_name="localhost",
                   client_addr=client_addr, client_port=client_port, auth_user=auth_user,
                   mail_from=sender, rcpts=list(rcpts or ["owner@example.com"]),
                   headers=headers, body=body.replace("\n", "\r\n").encode())
