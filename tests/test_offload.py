"""A large document normalized in child processes (ceptoar.ingest.offload) stores exactly what one process
stores, fails the same way, and leaves no process behind."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from ceptoar.core.model import Source
from ceptoar.ingest.offload import GROUP, NormalizingStopped, OffloadedStream
from ceptoar.normalize import FeedError
from ceptoar.pipeline import Limits, ingest_bytes
from ceptoar.store import Store
from tests.conftest import DATA, new_db

ONE_PROCESS = Limits(offload_bytes=1 << 62)
OFFLOADED = Limits(offload_bytes=0)
ITEM = re.compile(r"<item .*?</item>", re.S)


def jvn_feed(n: int) -> bytes:
    """n items of the real JVN files under their own ids, with a second copy of one entry (the later
    copy stands) and an item that cannot be built (skipped with a warning) among them."""
    texts = [(DATA / "jvn" / f).read_text(encoding="utf-8")
             for f in ("vulsdata_jvndb_2023.rdf", "spiegel_go-myjvn_getVulnOverviewList_2018-03-13_extracted.rdf")]
    items = [m.group(0) for t in texts for m in ITEM.finditer(t)]
    out = []
    for i in range(n):
        item = re.sub(r"JVNDB-\d{4}-\d{6}", f"JVNDB-2099-{i:06d}", items[i % len(items)])
        out.append(re.sub(r"CVE-\d{4}-\d+", f"CVE-2099-{100000 + i % 700}", item))  # CVEs shared across items
    out[GROUP + 3] = out[7].replace("<title>", "<title>[再掲] ")  # the same entry again, later in the feed
    out[2 * GROUP + 1] = re.sub(r'<link>.*?</link>|<sec:identifier>.*?</sec:identifier>|rdf:about="[^"]*"', "",
                                out[2 * GROUP + 1])  # neither an identifier nor a link
    head = texts[0][: texts[0].index("<item ")]
    head = re.sub(r"<items>.*?</items>", "", head, flags=re.S)
    return (head + "\n".join(out) + "\n</rdf:RDF>\n").encode("utf-8")


def stored(store: Store) -> dict:
    """What a store holds, without the moments of writing (and the hub's own `modified`, a clock)."""
    q = {
        "objects": "SELECT id, origin, type, hash, own_rank, kept_apart, "
                   "CASE WHEN origin = 'hub' THEN '' ELSE modified END FROM objects",
        "owners": "SELECT id, origin FROM object_owners",
        "advisories": "SELECT id, source, entry_key, source_report, title, description, published, modified, "
                      "stix_modified, url, identifiers, cves, cvss, cpes, max_cvss, source_tlp, tlp, tags, "
                      "auto_tags, medical_signals, lang FROM advisories",
        "cves": "SELECT cve, advisory FROM advisory_cves",
        "raw": "SELECT source, key, hash, version, raw FROM raw_entries",
    }
    return {name: sorted(map(tuple, store.execute(sql).fetchall()), key=repr) for name, sql in q.items()}


def children_of_this_process() -> list[str]:
    pid = os.getpid()
    return [c for t in Path(f"/proc/{pid}/task").iterdir()
            for c in (t / "children").read_text().split()]


@pytest.mark.parametrize("feed", ["jvn", "kev", "atom"])
def test_a_large_document_normalized_in_other_processes_stores_what_one_process_stores(tmp_path, feed):
    if feed == "jvn":
        body, source = jvn_feed(4 * GROUP + 37), Source(id="jvn", kind="jvn", name="JVN")
    elif feed == "kev":
        body = (DATA / "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json").read_bytes()
        source = Source(id="kev", kind="kev", name="KEV", lang="en")
    else:  # a document read whole (Atom): one child reads it all
        body, source = (DATA / "jvn/myjvn_np_getAlertList_hnd_atom.xml").read_bytes(), \
            Source(id="alerts", kind="jvn", name="JVN alerts")
    results, contents = [], []
    for i, limits in enumerate((ONE_PROCESS, OFFLOADED)):
        store = Store(new_db(tmp_path, f"{i}.db"))
        store.migrate()
        first, second = [], []  # the child processes alive each time a chunk was stored
        r = ingest_bytes(store, source, body, limits=limits,
                         progress=lambda _, seen=first: seen.append(children_of_this_process()))
        contents.append(stored(store))
        # Again (in one process either way: a store that holds the source's items recognizes them
        # before building them, and children would only repeat the parsing).
        again = ingest_bytes(store, source, body, limits=limits,
                             progress=lambda _, seen=second: seen.append(children_of_this_process()))
        assert not any(second)
        # Two children while the first chunks are stored (gone once the document is read).
        assert first or feed == "atom"  # an Atom document is too short to report progress
        assert (len(first[0]) == 2 if first else True) if limits is OFFLOADED else not any(first), (i, first)
        results.append([(x.status, x.new, x.updated, x.unchanged, x.skipped, x.warnings) for x in (r, again)])
        store.close()
    assert results[0] == results[1]
    assert contents[0] == contents[1]
    assert results[0][0][1] > 0 and contents[0]["advisories"]
    assert results[0][1][1] == 0 and results[0][1][3] >= results[0][0][1] - 1
    if feed == "jvn":
        status, new, updated, unchanged, skipped, warnings = results[0][0]
        assert (new, skipped) == (4 * GROUP + 37 - 2, 1), results[0]
        assert any("given twice" in w for w in warnings)
        assert any(w.startswith(f"skipped item {2 * GROUP + 2}") for w in warnings), warnings
        assert any("[再掲]" in a[4] for a in contents[0]["advisories"])  # the later copy stood
    assert children_of_this_process() == []


def test_a_document_that_fails_in_a_normalizing_process_commits_nothing(tmp_path):
    store = Store(new_db(tmp_path))
    store.migrate()
    source = Source(id="jvn", kind="jvn", name="JVN")
    body = jvn_feed(3 * GROUP)
    cut = body[: len(body) * 2 // 3] + b"<item rdf:about='x'><title>unfinished</tit></item></rdf:RDF>"
    with pytest.raises(FeedError, match="malformed XML"):
        ingest_bytes(store, source, cut, limits=OFFLOADED)
    assert store.count("advisories") == 0 and store.count("raw_entries") == 0
    with pytest.raises(FeedError, match="HTML page"):
        ingest_bytes(store, source, b"<!DOCTYPE html><html><body>maintenance</body></html>" + b" " * 100,
                     limits=OFFLOADED)
    # A KEV catalog is read an entry at a time: one broken two thirds in (a NaN) has had groups of
    # good entries stored by then, in the one transaction that the failure rolls back.
    kev = Source(id="kev", kind="kev", name="KEV", lang="en")
    catalog = (DATA / "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json").read_bytes()
    entries_at = [m.start() for m in re.finditer(rb'"cveID"', catalog)]
    at = entries_at[len(entries_at) * 2 // 3]
    broken = catalog[:at] + b'"cvss": NaN, ' + catalog[at:]
    hub_objects = store.count("objects")  # the hub's own (extension definitions, identity, markings)
    for limits in (ONE_PROCESS, OFFLOADED):
        with pytest.raises(FeedError, match="NaN is not a JSON number"):
            ingest_bytes(store, kev, broken, limits=limits)
        assert store.count("advisories") == 0 and store.count("raw_entries") == 0
        assert store.count("objects") == hub_objects
    assert children_of_this_process() == []


def test_a_parent_that_stops_reading_leaves_no_process_and_nothing_stored(tmp_path):
    store = Store(new_db(tmp_path))
    store.migrate()
    source = Source(id="jvn", kind="jvn", name="JVN")

    def interrupted(message: str) -> None:
        assert children_of_this_process(), "the children are still reading the document"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest_bytes(store, source, jvn_feed(8 * GROUP), limits=OFFLOADED, progress=interrupted)
    assert children_of_this_process() == []
    assert store.count("advisories") == 0
    # A stream read partly, then closed: its children are gone too.
    with OffloadedStream("jvn", jvn_feed(8 * GROUP), source, None) as stream:
        next(iter(stream))
    assert children_of_this_process() == []


@pytest.mark.parametrize("n", [1, 3])
def test_any_number_of_processes_gives_the_items_in_the_document_order(n):
    from ceptoar.normalize import jvn

    source = Source(id="jvn", kind="jvn", name="JVN")
    body = jvn_feed(3 * GROUP + 5)
    here = jvn.stream(body, source)
    expected = [(e.key, e.report["name"], e.raw) for e in here]
    with OffloadedStream("jvn", body, source, None, n) as there:
        got = [(e.key, e.report["name"], e.raw) for e in there]
    assert got == expected and len(got) == 3 * GROUP + 4
    assert (there.warnings, there.skipped) == (here.warnings, here.skipped) and there.skipped == 1


def test_with_no_interpreter_to_start_the_hub_normalizes_in_its_own_process(tmp_path, monkeypatch, caplog):
    store = Store(new_db(tmp_path))
    store.migrate()
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    r = ingest_bytes(store, Source(id="jvn", kind="jvn", name="JVN"), jvn_feed(2 * GROUP + 5), limits=OFFLOADED)
    assert (r.status, r.new, r.skipped) == ("ok", 2 * GROUP + 3, 1)
    assert "normalizing jvn in this process: cannot start another" in caplog.text


def test_a_normalizing_process_that_dies_fails_the_ingest_in_one_line(tmp_path):
    import signal

    store = Store(new_db(tmp_path))
    store.migrate()
    source = Source(id="jvn", kind="jvn", name="JVN")

    def killed(_: str) -> None:  # after the first chunk: the second child is killed from outside
        os.kill(int(children_of_this_process()[-1]), signal.SIGKILL)

    with pytest.raises(NormalizingStopped, match=r"the normalizing process ended without finishing \(exit status -9\)"):
        ingest_bytes(store, source, jvn_feed(8 * GROUP), limits=OFFLOADED, progress=killed)
    assert store.count("advisories") == 0 and children_of_this_process() == []
