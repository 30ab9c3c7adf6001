"""The RFC 7208 suite's zonedata -> zone-file lines and silent questions (no DNS here;
tests/test_rfc7208_suite.py checks what Knot then serves against the suite's driver)."""

from __future__ import annotations

from spf_suite_zones import entries, owner, world


def test_spf_records_are_also_txt_unless_the_name_has_txt() -> None:
    assert entries([{"SPF": "v=spf1 -all"}]) == [("SPF", ("v=spf1 -all",)),
                                                  ("TXT", ("v=spf1 -all",))]
    assert entries([{"SPF": "v=spf1 -all"}, {"TXT": "NONE"}]) == [("SPF", ("v=spf1 -all",))]
    assert entries([{"TXT": "x"}, {"SPF": "v=spf1"}]) == [("TXT", ("x",)), ("SPF", ("v=spf1",))]


def test_txt_strings_escapes_and_the_spf_type() -> None:
    w = world({"m.example.com": [{"SPF": ["v=spf1 ip4:", "192.0.2.5 -all"]}],
               "c.example.com": [{"TXT": 'v=spf1 a:x\r"q"\\ \x00\x80 -all'}]})
    lines = w.zone.splitlines()
    assert 'm.example.com. SPF "v=spf1 ip4:" "192.0.2.5 -all"' in lines
    assert 'm.example.com. TXT "v=spf1 ip4:" "192.0.2.5 -all"' in lines
    assert 'c.example.com. TXT "v=spf1 a:x\\013\\034q\\034\\092 \\000\\194\\128 -all"' in lines
    assert w.inexact == []


def test_long_strings_are_split_at_255_bytes() -> None:
    w = world({"l.example.com": [{"TXT": "v=spf1 " + "a" * 300}]})
    rdata = w.zone.split(" TXT ", 1)[1]
    parts = rdata.split('" "')
    assert len(parts) == 2 and len(parts[0].strip('"')) == 255


def test_empty_txt_and_repeated_records_are_listed_as_inexact() -> None:
    w = world({"n.example.com": [{"TXT": []}],
               "d.example.com": [{"TXT": "v=spf1 -all"}, {"TXT": "v=spf1 -all"}]})
    assert 'n.example.com. TXT ""' in w.zone
    assert w.zone.count('d.example.com. TXT "v=spf1 -all"') == 1
    assert sorted(w.inexact) == [
        "d.example.com TXT: repeated record served once (an RRset is a set)",
        "n.example.com TXT: TXT/SPF record of no strings served as one empty string"]


def test_owner_names_with_odd_characters_are_escaped() -> None:
    assert owner("foo:bar/baz.example.com") == "foo\\058bar\\047baz.example.com."
    assert owner("macro%percent  space.example.com") == \
        "macro\\037percent\\032\\032space.example.com."
    assert owner("CNAME.example.com.") == "CNAME.example.com."


def test_names_dns_cannot_hold_are_not_served() -> None:
    long_label = "a" * 64 + ".example.com"
    assert owner(long_label) is None and owner("a..example.com") is None
    assert owner(".".join(["abcdefghi"] * 26)) is None  # 259 characters
    w = world({long_label: [{"A": "192.0.2.1"}]})
    assert w.zone == "" and w.inexact == [f"{long_label}: not a domain name DNS can hold; "
                                          "not served"]


def test_other_types() -> None:
    w = world({"x.example.com": [{"A": "192.0.2.1"}, {"AAAA": "CAFE:BABE::1"},
                                 {"MX": [10, "mx.example.com"]}, {"MX": [0, ""]},
                                 {"PTR": "p.example.com"}],
               "y.example.com": [{"CNAME": "X.example.com."}]})
    assert w.zone.splitlines() == [
        "x.example.com. A 192.0.2.1", "x.example.com. AAAA cafe:babe::1",
        "x.example.com. MX 10 mx.example.com.", "x.example.com. MX 0 .",
        "x.example.com. PTR p.example.com.", "y.example.com. CNAME X.example.com."]


def test_timeout_answers_the_types_before_it_and_nothing_else() -> None:
    w = world({"t.example.com": [{"TXT": "v=spf1 -all"}, "TIMEOUT", {"A": "192.0.2.1"}],
               "all.example.com": ["TIMEOUT"],
               "s.example.com": [{"SPF": "v=spf1 -all"}, "TIMEOUT"],
               "a.example.com": [{"A": "TIMEOUT"}, {"TXT": "v=spf1 -all"}],
               "OK.example.com": [{"A": "192.0.2.2"}]})
    assert not w.silent("t.example.com", "TXT") and w.silent("t.example.com", "A")
    assert "192.0.2.1" not in w.zone  # after TIMEOUT: never answered
    assert w.silent("all.example.com", "TXT") and w.silent("ALL.example.com.", "MX")
    # the TXT copy of an SPF record comes after the TIMEOUT: TXT is silent
    assert not w.silent("s.example.com", "SPF") and w.silent("s.example.com", "TXT")
    assert w.silent("a.example.com", "A") and not w.silent("a.example.com", "TXT")
    assert not w.silent("ok.example.com", "A") and not w.silent("nx.example.com", "A")
    assert w.silent("error.example.com", "A")  # absent names under error. never answer
