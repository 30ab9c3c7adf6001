"""Every finding id postwarden can emit, in one table: the milter's and the self-check's.

Ids are an interface: they appear in logs, in the JSON report, in the store and in
`[policy] enforce`. A typo there (`ratelimit.exceded`) would silently switch a hold
off, so the config is validated against this table, the policy's truth-table test
runs over it, and docs/findings.md is generated from it (`postwarden findings
--markdown`). tests/test_ids.py fails when code can emit an id that is missing here
or when an id here can no longer be emitted.

`severity` is the worst severity the id is emitted with, on the one scale both halves
share (postwarden.findings.Severity; a self-check status maps onto it with
`Severity.of_status`). Ids built at run time are spelled out from their sources
below: SPF results, form signals, the blocklist table, the checklist items.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

from postwarden.blocklists import DEFAULT_LISTS, Blocklist
from postwarden.findings import Severity

Half = Literal["milter", "selfcheck"]
MILTER: Half = "milter"
SELFCHECK: Half = "selfcheck"
INF, W, E, C, U = (Severity.INFO, Severity.WARNING, Severity.ERROR, Severity.CRITICAL,
                 Severity.UNKNOWN)


@dataclass(frozen=True)
class FindingId:
    id: str
    half: Half  # milter: a per-message finding the policy sees; selfcheck: a report check
    severity: Severity
    doc: str

    @property
    def family(self) -> str:
        """`dkim` for `dkim.missing`, `helo` for `helo`: what `family.*` matches."""
        return self.id.split(".", 1)[0]


# pyspf's results other than pass, each a finding `spf.<result>` (milter/spf_check.py).
SPF_RESULTS: dict[str, tuple[Severity, str]] = {
    "fail": (E, "SPF of the envelope sender (or HELO) fails for this host's IP"),
    "softfail": (W, "SPF ends in ~all and does not list this host's IP"),
    "neutral": (W, "SPF ends in ?all and does not list this host's IP"),
    "none": (W, "the envelope sender domain publishes no SPF record"),
    "permerror": (E, "the SPF record is broken (syntax, more than 10 lookups)"),
    "temperror": (W, "SPF could not be evaluated: DNS failure or message budget spent"),
}

# Suspicion signals of form mail, each a finding `form.<signal>` (milter/forms.py,
# milter/ratelimit.py); their weights are `[forms] weights`.
FORM_SIGNALS: dict[str, str] = {
    "many_rcpts": "more recipients than [forms] max_rcpts",
    "many_domains": "more recipient domains than [forms] max_rcpt_domains",
    "foreign_from": "the From domain is not one of this host's domains",
    "reply_to_differs": "Reply-To differs from From",
    "many_urls": "more URLs in the body than [forms] max_urls",
    "url_shortener": "a URL shortener from [forms] url_shorteners in the body",
    "repeated_body": "the same body from this source again and again (store history)",
    "burst": "a burst of messages from this source (store history)",
}

# The seed checklist's yes/no items, each `checklist.<item>` (checks/checklist.py).
CHECKLIST_ITEMS: dict[str, str] = {
    "spf": "checklist: valid SPF record?",
    "dkim_dmarc": "checklist: DMARC and DKIM records configured correctly?",
    "hostname_ports": "checklist: correct hostname and submission port set up?",
    "auth": "checklist: authentication required before sending?",
    "spam_filter": "checklist: internal spam filter in place? (info only)",
    "separate_ips": "checklist: separate IPs for clean and filtered mail? (info only)",
    "forms": "checklist: web forms protected against spam? (info only)",
    "sent_7d": "checklist: mail sent from this host in the last 7 days?",
}

# Receivers' reply classes that raise a finding (postwarden.replies.CLASSES): the
# feedback reader logs them per delivery, the brake check (milter/feedback_brake.py)
# raises them on a source's next message once its rejections pass the threshold.
FEEDBACK: dict[str, tuple[Severity, str]] = {
    "feedback.blocklisted": (C, "a receiver rejected our mail citing a blocklist for this "
                                "host's IP (the list is self-checked at once)"),
    "feedback.auth_rejected": (E, "a receiver rejected our mail for SPF/DKIM/DMARC; "
                                  "a MISMATCH when postwarden predicted dmarc=pass"),
    "feedback.rdns": (E, "a receiver rejected our mail for the sending IP's PTR"),
    "feedback.reputation": (E, "a receiver deferred or rejected our mail for IP or "
                               "domain reputation (unsolicited rate, complaints)"),
    "feedback.rate_limited": (E, "a receiver rate-limits this host"),
    "feedback.content": (E, "a receiver rejected our mail as spam (content)"),
    "feedback.unknown_recipients": (E, "a receiver says the recipient does not exist "
                                       "(many from one source: harvested addresses)"),
}

def _blocklist(bl: Blocklist) -> FindingId:
    what = f"this host's IP is listed on {bl.name} ({bl.zone})"
    if bl.level:
        what += f"; severity set by [selfcheck] severity_{bl.level}"
    return FindingId(bl.check_id, SELFCHECK, Severity.of_status(bl.listed_status), what)


_TABLE: tuple[FindingId, ...] = (
    # --- milter: per-message findings -------------------------------------------------
    FindingId("dkim.missing", MILTER, W, "the message carries no DKIM signature"),
    FindingId("dkim.unaligned", MILTER, W,
              "DKIM signed, but by a domain that does not align with the From domain"),
    FindingId("dkim.invalid", MILTER, E, "a DKIM signature does not verify"),
    FindingId("dkim.weak_key", MILTER, E,
              "a DKIM key under 2048 bits (warning; error under 1024, receivers ignore it)"),
    FindingId("dkim.temperror", MILTER, W,
              "a DKIM signature could not be verified: the key lookup failed"),
    *(FindingId(f"spf.{r}", MILTER, sev, doc) for r, (sev, doc) in SPF_RESULTS.items()),
    FindingId("spf.unaligned", MILTER, W,
              "the envelope sender domain does not align with the From domain "
              "(info when aligned DKIM passes)"),
    FindingId("dmarc.no_from", MILTER, E, "the message has no From address"),
    FindingId("dmarc.multiple_from", MILTER, E, "the message has more than one From address"),
    FindingId("dmarc.none", MILTER, W,
              "the From domain has no usable DMARC record (none, several, or no valid p=)"),
    FindingId("dmarc.temperror", MILTER, W,
              "the DMARC record or the SPF/DKIM evidence could not be fetched in time"),
    FindingId("dmarc.fail", MILTER, C,
              "neither aligned SPF nor aligned DKIM passes (critical for p=reject, "
              "error for p=quarantine, warning for p=none)"),
    FindingId("dmarc.generations_differ", MILTER, C,
              "RFC 7489 and RFC 9989 receivers reach different DMARC outcomes (a policy "
              "at an intermediate label, psd=, np=, pct= vs t=, several records); the "
              "severity is the stricter outcome's"),
    FindingId("form.detected", MILTER, INF, "form/script mail (PHP mail(), a web user, a marker)"),
    *(FindingId(f"form.{s}", MILTER, INF, f"form mail signal: {doc}")
      for s, doc in FORM_SIGNALS.items()),
    FindingId("form.suspicious", MILTER, W,
              "form mail whose signal weights add up to [forms] suspicious_score or more"),
    FindingId("ratelimit.exceeded", MILTER, W, "a [ratelimit] limit is used up"),
    FindingId("uceprotect.listed_form", MILTER, W,
              "form mail while a sending IP is UCEPROTECT L1/L2-listed (held when "
              "[selfcheck] hold_forms_when_listed = true)"),
    *(FindingId(fid, MILTER, sev, doc) for fid, (sev, doc) in FEEDBACK.items()),
    FindingId("internal.error", MILTER, E,
              "a check or postwarden itself failed on this message (accepted: fail open)"),
    # --- self-check: report checks -----------------------------------------------------
    FindingId("milter.reachable", SELFCHECK, C,
              "nothing answers the milter negotiation on a socket Postfix names: mail "
              "passes unchecked"),
    FindingId("milter.heartbeat", SELFCHECK, W,
              "the daemon's heartbeat is missing, stale or says it stopped while Postfix "
              "runs"),
    FindingId("resolver.reachable", SELFCHECK, U,
              "no configured nameserver answers: the root cause of every DNS-based unknown"),
    FindingId("blocklists.no_sending_ip", SELFCHECK, U,
              "no sending IP known: no blocklist was asked"),
    FindingId("selfcheck.selection", SELFCHECK, U, "--only/--skip select no check"),
    FindingId("selfcheck.run", SELFCHECK, U,
              "the self-check itself could not run (config, store, error, --timeout)"),
    FindingId("selfcheck.cached", SELFCHECK, U,
              "--cached: the daemon's stored report is older than MAXAGE"),
    FindingId("probe.sendmail", SELFCHECK, C,
              "the milter never saw the probe sent with the sendmail command "
              "(non_smtpd_milters)"),
    FindingId("probe.smtp", SELFCHECK, C,
              "the milter never saw the probe sent to an SMTP listener with postwarden"),
    *(_blocklist(bl) for bl in DEFAULT_LISTS),
    FindingId("resolver.public", SELFCHECK, W,
              "the resolver is a public one or a blocklist refused it: answers unreliable"),
    FindingId("escalation.uceprotect", SELFCHECK, C,
              "L1-listed for days, or form mail still flowing while L1-listed"),
    FindingId("rdns.ptr", SELFCHECK, C, "the sending IP has no PTR, or a generic one"),
    FindingId("rdns.fcrdns", SELFCHECK, C, "the PTR name does not resolve back to the IP"),
    FindingId("helo", SELFCHECK, C,
              "the HELO name (myhostname) is not a resolving name of this host"),
    FindingId("spf.record", SELFCHECK, C,
              "a domain's SPF record is missing, broken or does not list this host"),
    FindingId("dkim.record", SELFCHECK, C,
              "a DKIM key is missing, revoked, unparsable, weak or does not match"),
    FindingId("dmarc.record", SELFCHECK, W,
              "a domain's DMARC record is missing, unusable or weak (RFC 7489 and RFC 9989)"),
    FindingId("dmarc.generations", SELFCHECK, W,
              "RFC 7489 and RFC 9989 receivers read a domain's DMARC policy or "
              "Organizational Domain differently"),
    FindingId("mx", SELFCHECK, W, "a domain's MX lookup failed or it has no MX"),
    FindingId("postfix.config", SELFCHECK, U,
              "the Postfix config could not be read or audited in time"),
    FindingId("postfix.milters", SELFCHECK, C,
              "postwarden is missing from smtpd_milters/non_smtpd_milters"),
    FindingId("postfix.milter_default_action", SELFCHECK, W,
              "milter_default_action is not accept: a postwarden outage would stop mail"),
    FindingId("postfix.submission", SELFCHECK, W,
              "the submission ports do not require TLS and authentication"),
    FindingId("postfix.relay", SELFCHECK, C, "Postfix is an open relay"),
    FindingId("postfix.myhostname", SELFCHECK, C,
              "myhostname is not a fully qualified public name"),
    FindingId("postfix.inet_protocols", SELFCHECK, W,
              "IPv6 is on but an IPv6 address has no PTR"),
    FindingId("store.reachable", SELFCHECK, C,
              "the store the milter counts in cannot be reached (a shared one: the relays "
              "enforce their limits alone, degraded mode)"),
    FindingId("feedback.receivers", SELFCHECK, C,
              "receivers' replies over the window: rejections by class and receiver "
              "(critical on a mismatch with postwarden's DMARC prediction)"),
    FindingId("dmarc_report.mismatch", SELFCHECK, E,
              "a DMARC aggregate report saw dkim/spf/dmarc=fail from this host's IP for "
              "mail postwarden predicted to pass"),
    FindingId("dmarc_report.foreign_ip", SELFCHECK, W,
              "a DMARC aggregate report shows mail using our domain from an IP that is not "
              "this host's (info when it passed DMARC)"),
    FindingId("activity.7d", SELFCHECK, INF, "mail sent in the last 7 days, and its top sources"),
    *(FindingId(f"checklist.{k}", SELFCHECK, INF, doc) for k, doc in CHECKLIST_ITEMS.items()),
    FindingId("checklist.verdict", SELFCHECK, W,
              "at risk of blacklisting: a checklist answer is NO and mail was sent"),
)

REGISTRY: dict[str, FindingId] = {f.id: f for f in _TABLE}
if len(REGISTRY) != len(_TABLE):  # pragma: no cover - a duplicate is a bug in this table
    raise RuntimeError("postwarden.ids: duplicate finding id")
FAMILIES: frozenset[str] = frozenset(f.family for f in _TABLE)
MILTER_IDS: frozenset[str] = frozenset(f.id for f in _TABLE if f.half == MILTER)
MILTER_FAMILIES: frozenset[str] = frozenset(f.family for f in _TABLE if f.half == MILTER)


def blocklist_id(zone: str) -> str:
    """The id of a `[selfcheck] lists_add` zone (not in the table: it is config)."""
    return f"dnsbl.{zone.lower().strip('.')}"


def policy_key_problem(key: str) -> str | None:
    """Why `key` cannot be a `[policy]` key (a per-message id or `family.*`), or None."""
    if key.endswith(".*"):
        family = key[:-2]
        if family in MILTER_FAMILIES:
            return None
        if family in FAMILIES:
            return (f"family {family!r} has only self-check ids; the policy sees "
                    f"per-message findings ({', '.join(sorted(MILTER_FAMILIES))})")
        close = difflib.get_close_matches(family, sorted(MILTER_FAMILIES), n=1)
        hint = f" (did you mean '{close[0]}.*'?)" if close else ""
        return f"unknown finding family {family!r}{hint}"
    if key in MILTER_IDS:
        return None
    if key in REGISTRY:
        return f"{key!r} is a self-check id; the policy sees only per-message findings"
    close = difflib.get_close_matches(key, sorted(MILTER_IDS), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown finding id {key!r}{hint}"


def markdown() -> str:
    """docs/findings.md: every id with its family, severity and description."""
    out = [
        "# Finding ids",
        "",
        "Generated from `postwarden/ids.py` by `postwarden findings --markdown`; do not edit.",
        "",
        "Per-message ids (the milter's) are the ones `[policy] enforce` and",
        "`[policy] hold_in_monitor` accept, as an id or as `family.*`. Self-check ids",
        "appear in `postwarden selfcheck` reports. Severity is the worst the id is",
        "reported with; a self-check status maps onto the same scale",
        "(ok = nothing wrong found, unknown = no evidence either way; both rank",
        "below info).",
        "`[selfcheck] lists_add` zones add `dnsbl.<zone>` ids (warning).",
        "",
    ]
    for half, title in ((MILTER, "Per-message (milter)"), (SELFCHECK, "Self-check")):
        out += [f"## {title}", "", "| id | family | severity | description |",
                "|---|---|---|---|"]
        out += [f"| `{f.id}` | {f.family} | {f.severity} | {f.doc} |"
                for f in _TABLE if f.half == half]
        out.append("")
    return "\n".join(out)
