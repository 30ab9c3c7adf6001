"""RFC 8463 Appendix A, the worked example of an Ed25519 DKIM signature, as data.

A.1 gives the Ed25519 secret key, A.2 the DNS records of the Ed25519 key
(brisbane) and of the RSA key (test) the example also signs with, A.3 the signed
message, with both signatures, c=simple/simple. The lines are kept exactly as
the RFC prints them, trailing spaces included: c=simple signs those bytes.
"""

from __future__ import annotations

DOMAIN = "football.example.com"
SECRET_KEY_B64 = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="  # A.1
RECORDS = {  # A.2
    "brisbane": "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
    "test": ("v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3id"
             "Y6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1L"
             "xj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"),
}
_SIGNED = [  # A.3
    "DKIM-Signature: v=1; a=ed25519-sha256; c=simple/simple; ",
    " d=football.example.com; i=@football.example.com; ",
    " q=dns/txt; s=brisbane; t=1518460054; h=from : to : ",
    " subject : date : message-id : from : subject : date; ",
    " bh=4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=; ",
    " b=9/dsDChY0YMTtD5Eyw3wx7x22BlSJP7M5ECbJ7GWrR45nXlTCGb8l0YB",
    " o0wBLR++X5LqmsxXaOYLLJe46l10AQ==",
    "DKIM-Signature: v=1; a=rsa-sha256; c=simple/simple; ",
    " d=football.example.com; i=@football.example.com; ",
    " q=dns/txt; s=test; t=1527915362; h=from : to : subject : ",
    " date : message-id : from : subject : date; ",
    " bh=4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=; ",
    " b=icKcLSEZYXJ95flvWE8FT6hl5iqd8MC/LEKYH0QjsqYy6MO/4pgVNCZH",
    " l/RAXAuADxE/40Fg7uTlxwwD1hjN2Ple6J//cJfslBdDOq6zTVbne1dqtl",
    " NOat7iamJ1AfRqyG+ja7a2AZsrpUuJ7VA6O+0zRYPqpwMEkEFIzI9i/Xk=",
    "From: Joe SixPack <joe@football.example.com>",
    "To: Suzie Q <suzie@shopping.example.net>",
    "Subject: Is dinner ready?",
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)",
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>",
    "",
    "Hi.",
    "",
    "We lost the game.  Are you hungry yet?",
    "",
    "Joe.",
    "",
]
SIGNED_MESSAGE = "\r\n".join(_SIGNED).encode("ascii")
UNSIGNED_MESSAGE = "\r\n".join(_SIGNED[15:]).encode("ascii")
