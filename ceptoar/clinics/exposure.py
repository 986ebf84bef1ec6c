"""Aggregate exposure: how many facilities' registers hold a product an advisory names, per
prefecture, published to members as a TLP:GREEN note on the advisory.

Counts only. A prefecture with fewer matched facilities than the minimum (`exposure_minimum`) is not
named: its facilities are counted under その他 (other prefectures), and an advisory matched in fewer
facilities than the minimum altogether gets no note at all. The note is a hub-authored STIX `note`
whose id is derived from the advisory's, so a later count replaces it (a new version); it goes out
pinned with a new publication of the advisory, marked and served at TLP:GREEN or the advisory's TLP
if higher.
"""

from __future__ import annotations

from ceptoar.core.errors import CeptoarError
from ceptoar.core.extensions import HUB_IDENTITY
from ceptoar.core.model import HUB, TLP_IDS, TLP_ORDER, later_than, now_stix
from ceptoar.facilities import matching, registers
from ceptoar.publishing import triage
from ceptoar.publishing.publication import note_id
from ceptoar.store import Store

OTHER = "その他"


class ExposureError(CeptoarError, ValueError):
    pass


def count(store: Store, advisory: str, minimum: int, min_confidence: str = "product") -> dict:
    """{"advisory", "facilities", "prefectures": [(name, count)…], "other", "minimum", "confidence"}:
    prefectures below the minimum folded into `other`."""
    if min_confidence not in matching.CONFIDENCE:
        raise ExposureError(f"confidence must be one of {', '.join(matching.CONFIDENCE)}")
    wanted = matching.CONFIDENCE[:matching.CONFIDENCE.index(min_confidence) + 1]
    per = store.facilities.exposure(advisory, list(wanted))
    named = sorted(((p, n) for p, n in per.items() if n >= minimum), key=lambda x: (-x[1], x[0]))
    total = sum(per.values())
    return {"advisory": advisory, "facilities": total, "prefectures": named,
            "other": total - sum(n for _p, n in named), "minimum": minimum, "confidence": min_confidence}


def text(c: dict) -> str:
    lines = [f"この情報の製品を台帳に登録している医療機関: {c['facilities']} 施設 "
             f"(Facilities whose register lists a product this advisory names: {c['facilities']})", ""]
    lines += [f"{p}: {n}" for p, n in c["prefectures"]]
    if c["other"]:
        lines.append(f"{OTHER} (各 {c['minimum']} 施設未満の都道府県 / prefectures under {c['minimum']}): {c['other']}")
    lines += ["", "施設名は含みません。件数は医療セプターに台帳を登録した施設のみの集計です。",
              "Counts only, no facility is named; only facilities that registered with the CEPTOAR are counted."]
    return "\n".join(lines)


def publish(store: Store, advisory: str, actor: str, minimum: int, min_confidence: str = "product") -> dict:
    """Count, store the note as a new hub version, and republish the advisory with it."""

    report = registers.published_report(store, advisory)
    if report is None:
        raise ExposureError(f"{advisory} is not published (or was revoked): nothing to note")
    c = count(store, advisory, minimum, min_confidence)
    if c["facilities"] < minimum:
        raise ExposureError(f"{c['facilities']} matched facilities, fewer than the minimum {minimum}: "
                            "no note (it could point at them)")
    return c | publish_note(store, advisory, c, actor)


def publish_note(store: Store, advisory: str, c: dict, actor: str) -> dict:
    """The counts `c` as a new version of the advisory's note, the advisory published again with it.
    The note is marked TLP:GREEN, or the advisory's TLP when that is higher (it says the advisory
    exists); it names the advisory only by reference."""

    nid = note_id(advisory)
    tlp = TLP_ORDER[max(1, TLP_ORDER.index(store.advisories.get(advisory)["tlp"]))]
    with store.transaction():
        newest = store.objects.max_modified([nid]).get(nid)
        version = later_than(now_stix(), newest) if newest else now_stix()
        first = store.objects.versions(nid, HUB)
        note = {"type": "note", "spec_version": "2.1", "id": nid,
                "created": first[0].obj["created"] if first else version, "modified": version,
                "created_by_ref": HUB_IDENTITY,
                "abstract": f"台帳照合: {c['facilities']} 施設 (register matches: {c['facilities']} facilities)",
                "content": text(c), "authors": ["医療セプター"],
                "object_refs": [advisory], "labels": ["ceptoar:exposure"],
                "object_marking_refs": [TLP_IDS[tlp]]}
        store.objects.put_hub([note])  # the hub's id, whoever sent an object under it before
        triage.republish(store, advisory, actor)
        store.audit.add(actor, "exposure-note", advisory, {"facilities": c["facilities"],
                                                           "prefectures": len(c["prefectures"]),
                                                           "minimum": c["minimum"], "note": nid})
    return {"note": nid, "version": version}
