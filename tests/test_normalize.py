"""Normalizers on the real public files of ../shared/data: pure functions, no server, no store."""

from __future__ import annotations

import json

import feedparser
import pytest

from ceptoar.core.extensions import ADVISORY, props
from ceptoar.core.model import TLP_IDS, Source, vulnerability_id
from ceptoar.normalize import FeedError, csaf, json_list_items, jvn, kev, rss, stix

JVN = Source(id="jvndb", kind="jvn", name="JVN iPedia", lang="ja")
KEV = Source(id="cisa-kev", kind="kev", name="CISA KEV", lang="en")
CSAF = Source(id="cisa-csaf", kind="csaf", name="CISA CSAF", lang="en")
STIX = Source(id="partner", kind="stix", name="Partner", lang="en")
RSS = Source(id="jpcert", kind="rss", name="JPCERT/CC", lang="ja")


def read(data, name):
    return (data / name).read_bytes()


def by_key(entries):
    return {e.key: e for e in entries}


def test_jvn_keeps_every_reference_cvss_and_cpe(data):
    entries = by_key(jvn.parse(read(data, "jvn/spiegel_go-myjvn_getVulnOverviewList_2018-03-13_extracted.rdf"), JVN))
    r = entries["JVNDB-2018-000024"].report
    ids = {x.get("external_id") for x in r["external_references"]}
    assert {"CVE-2017-10852", "CVE-2017-10853", "CVE-2017-10854", "JVN#15201064", "CWE-78", "CWE-264"} <= ids
    assert sorted((c["version"], c["score"]) for c in props(r)["cvss"]) == [("2.0", 5.8), ("3.0", 8.8)]
    assert props(r)["cpes"] == ["cpe:/h:corega:cg-wgr1200"]
    cves = entries["JVNDB-2018-000024"].cves
    assert sorted(cves) == ["CVE-2017-10852", "CVE-2017-10853", "CVE-2017-10854"]
    assert set(r["object_refs"]) >= {vulnerability_id(c) for c in cves}
    # Only source facts: the shared vulnerability objects are the hub's, made at ingest.
    assert entries["JVNDB-2018-000024"].objects == []


def test_feedparser_alone_would_lose_them(data):
    # Why the JVN normalizer reads mod_sec itself: feedparser keeps one of each.
    fp = feedparser.parse(read(data, "jvn/spiegel_go-myjvn_getVulnOverviewList_2018-03-13_extracted.rdf"))
    item = fp.entries[0]
    assert item["sec_references"]["id"] == "CWE-78"  # only the last of seven references
    assert item["sec_cvss"]["version"] == "2.0"  # the v3 score is gone
    assert "cpe:/h:corega:cg-wgr1200" not in json.dumps(item)  # element text dropped


def test_jvn_both_namespaces_dates_and_japanese(data):
    old_ns = by_key(jvn.parse(read(data, "jvn/vulsdata_jvndb_2022.rdf"), JVN))
    r = old_ns["JVNDB-2021-018345"].report
    assert r["name"] == "Android における脆弱性"
    assert [c["score"] for c in props(r)["cvss"]] == [4.6, 7.8]
    assert props(r)["cpes"] == ["cpe:/o:google:android"]
    # JVN omits seconds; the offset is kept, STIX gets UTC.
    assert props(r)["dates"]["published"] == "2023-06-01T11:12:00+09:00"
    assert r["published"] == "2023-06-01T02:12:00.000Z"
    new_ns = by_key(jvn.parse(read(data, "jvn/myjvn_np_getVulnOverviewList_hnd.xml"), JVN))
    assert props(new_ns["JVNDB-2025-002953"].report)["cvss"][0]["score"] == 9.8
    old = by_key(jvn.parse(read(data, "jvn/vulsdata_jvndb_2007.rdf"), JVN))["JVNDB-2007-000127"].report
    ids = {x.get("external_id") for x in old["external_references"]}
    assert {"JVNVU#276432", "CVE-2007-0851", "VU#276432"} <= ids
    assert [(c["version"], c["score"]) for c in props(old)["cvss"]] == [("2.0", 5.4)]


def test_jvn_item_without_cpe_and_with_ampersand(data):
    entries = jvn.parse(read(data, "jvn/vulsdata_jvndb_2022.rdf"), JVN)
    assert len(entries) == 3
    refs = [x.get("url") for e in entries for x in e.report.get("external_references", [])]
    assert "https://security.samsungmobile.com/securityUpdate.smsb?year=2022&month=2" in refs


def test_jvn_atom_alert_list(data):
    entries = by_key(jvn.parse(read(data, "jvn/myjvn_np_getAlertList_hnd_atom.xml"), JVN))
    assert props(entries["MYJVN-ALT-2025-0011"].report)["cpes"] == ["cpe:/a:wordpress:wordpress"]


def test_real_malformed_jvn_feed_is_an_error(data):
    with pytest.raises(FeedError, match="malformed XML"):
        jvn.parse(read(data, "jvn/myjvn_np_dataFeed_jvndb_rss_hnd.xml"), JVN)


def test_ids_are_deterministic_and_shared_by_cve(data):
    a = jvn.parse(read(data, "jvn/vulsdata_jvndb_2022.rdf"), JVN)
    b = jvn.parse(read(data, "jvn/vulsdata_jvndb_2022.rdf"), JVN)
    assert [e.report["id"] for e in a] == [e.report["id"] for e in b]
    other = Source(id="jvndb-en", kind="jvn")
    c = jvn.parse(read(data, "jvn/vulsdata_jvndb_2022.rdf"), other)
    assert a[0].report["id"] != c[0].report["id"]  # source is part of the identity
    k = kev.parse(read(data, "cisa_kev/vulsdata_kev_2022-08-18_partial.json"), KEV)[0]
    assert vulnerability_id("CVE-2022-21971") in k.report["object_refs"] and k.cves == ["CVE-2022-21971"]


def test_kev_full_catalog_trusts_the_list(data):
    entries = kev.parse(read(data, "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json"), KEV)
    assert len(entries) == 1404
    assert sum("ransomware" in e.tags for e in entries) == 293
    first = by_key(entries)["CVE-2025-48384"]
    assert props(first.report)["kev"]["due_date"] == "2025-09-15"
    assert props(first.report)["cwes"] == ["CWE-59", "CWE-436"]
    partial = kev.parse(read(data, "cisa_kev/vulsdata_kev_2022-08-18_partial.json"), KEV)
    assert len(partial) == 1  # its `count` says 801


def test_csaf_icsma(data):
    e = csaf.parse(read(data, "cisa_icsma/cisagov_CSAF_icsma-24-200-01.json"), CSAF)[0]
    r = e.report
    assert r["name"] == "Philips Vue PACS"
    assert len(props(r)["cvss"]) == 13  # one v3.1 score per CVE, 13 CVEs
    assert len(e.cves) == 13
    assert max(c["score"] for c in props(r)["cvss"]) == 9.8
    assert "icsma" in props(r)["medical_signals"]
    assert props(r)["csaf"]["sectors"] == ["Healthcare and Public Health"]
    assert "ICSMA-24-200-01" in {x.get("external_id") for x in r["external_references"]}
    two = csaf.parse(read(data, "cisa_icsma/cisagov_CSAF_icsma-24-060-01.json"), CSAF)[0]
    assert set(two.cve_facts) == {"CVE-2024-22100", "CVE-2024-25578"}
    assert two.cve_facts["CVE-2024-22100"]["cvss"][0]["score"] == 7.8
    assert two.cve_facts["CVE-2024-22100"]["cwes"] == ["CWE-122"]
    assert props(r)["csaf"]["remediation_categories"] == ["mitigation", "vendor_fix"]
    assert props(two.report)["csaf"]["remediation_categories"] == ["mitigation"]


@pytest.mark.parametrize("name, count", [("jvn/myjvn_np_getVulnDetailInfo_hnd_JVNDB-2022-000097.xml", 1),
                                         ("jvn/spiegel_go-myjvn_vuldef_extracted.xml", 2),
                                         ("jvn/vulsdata_jvndb_detail_2023.rdf", 2)])
def test_jvn_vuldef_detail_documents(data, name, count):
    """MyJVN getVulnDetailInfo / JVN iPedia detail feeds (VULDEF): every entry, whole."""
    entries = jvn.parse(read(data, name), JVN)
    assert len(entries) == count and not entries.warnings
    for e in entries:
        r = e.report
        assert r["lang"] == "ja" and r["name"] and r["description"]
        p = props(r)
        assert p["jvn"]["solution"] and p["jvn"]["impact"] and p["jvn"]["history"]
        assert all(c["vector"] and c["score"] for c in p["cvss"])
        assert p["products"] and all(x["product"] and x["versions"] for x in p["products"])
        # The stored raw text is the entry alone, in the document's root (every namespace): it reads back.
        assert e.raw.count("<Vulinfo>") == 1 and 'xmlns:sec="http://jvn.jp/rss/mod_sec/3.0/"' in e.raw
        again = jvn.parse(e.raw.encode(), JVN)[0]
        assert again.report == r or {k: v for k, v in again.report.items() if k != "extensions"} == \
            {k: v for k, v in r.items() if k != "extensions"}
    first = by_key(entries)
    if "JVNDB-2022-000097" in first:
        r = first["JVNDB-2022-000097"].report
        p = props(r)
        assert first["JVNDB-2022-000097"].cves == ["CVE-2022-41993", "CVE-2022-46287", "CVE-2022-46288"]
        assert r["external_references"][0]["url"] == "https://jvndb.jvn.jp/ja/contents/2022/JVNDB-2022-000097.html"
        ids = {x.get("external_id") for x in r["external_references"]}
        assert {"JVN#96321933", "CWE-79", "CWE-20"} <= ids
        assert "https://nvd.nist.gov/vuln/detail/CVE-2022-46288" in {x.get("url") for x in r["external_references"]}
        assert p["products"] == [{"cpe": "cpe:/a:jacic:electronic_bidding_core_system",
                                  "vendor": "一般財団法人日本建設情報総合センター", "product": "電子入札コアシステム",
                                  "versions": ["v6 R4 およびそれ以前のバージョン"]}]
        assert sorted((c["version"], c["vector"]) for c in p["cvss"]) == [
            ("2.0", "AV:N/AC:M/Au:N/C:N/I:P/A:N"), ("3.0", "CVSS:3.0/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N")]
        assert p["jvn"]["solution"] == "[パッチを適用する] 開発者が提供する情報をもとにパッチを適用してください。"
        assert p["dates"]["published"] == "2022-12-15T12:04:51+09:00"
        assert "\n  掲載" in p["jvn"]["history"][0]["text"]


def test_rolie_index(data):
    doc = json.loads(read(data, "cisa_icsma/cisagov_CSAF_cisa-csaf-ot-feed-tlp-white.json"))
    entries = csaf.rolie_entries(doc)
    assert len(entries) == 2379
    assert sum(e["id"].startswith("ICSMA-") for e in entries) == 144
    with pytest.raises(FeedError, match="ROLIE"):
        csaf.parse(json.dumps(doc).encode(), CSAF)


@pytest.mark.parametrize("name", [
    "elastic_labs_cisa_ais_sample_stix.json", "elastic_labs_guloader_stix-bundle.json",
    "elastic_labs_warmcookie_stix-bundle.json", "myjvn_np_getVulnDetailInfo_oka_JVNDB-2017-009608_jvnstix.json",
    "oasis_indicator-for-c2-ip-address.json", "oasis_infrastructure.json",
    "oasis_malicious-email-indicator-with-attachment.json", "oasis_threat-reports_poisonivy.json",
    "vulsdata_mitre_enterprise-attack_trimmed.json",
])
def test_stix_bundles_import_without_losing_objects(data, name):
    raw = read(data, f"stix/{name}")
    entries = stix.parse(raw, STIX)
    original = {o["id"] for o in json.loads(raw)["objects"]}
    kept = {o["id"] for e in entries for o in [e.report, *e.objects]}
    assert original <= kept


def test_stix_tlp_clear_under_three_encodings(data):
    guloader = stix.parse(read(data, "stix/elastic_labs_guloader_stix-bundle.json"), STIX)  # TLP:WHITE id
    warm = stix.parse(read(data, "stix/elastic_labs_warmcookie_stix-bundle.json"), STIX)  # WHITE id named CLEAR
    assert [e.tlp for e in guloader] == ["CLEAR"] and [e.tlp for e in warm] == ["CLEAR"]
    labelled = {"type": "bundle", "id": "bundle--0b2c9d6e-2a0b-4b8e-a1b4-6c4b0a9a1a11", "objects": [
        {"type": "report", "spec_version": "2.1", "id": "report--0b2c9d6e-2a0b-4b8e-a1b4-6c4b0a9a1a12",
         "created": "2024-01-01T00:00:00Z", "modified": "2024-01-01T00:00:00Z", "name": "x",
         "published": "2024-01-01T00:00:00Z", "object_refs": [], "labels": ["tlp:amber"]}]}
    assert stix.parse(json.dumps(labelled).encode(), STIX)[0].tlp == "AMBER"
    oasis = dict(labelled, objects=[dict(labelled["objects"][0], labels=[],
                                         object_marking_refs=[TLP_IDS["GREEN"]])])
    assert stix.parse(json.dumps(oasis).encode(), STIX)[0].tlp == "GREEN"


def test_stix_report_and_custom_sdo(data):
    poison = stix.parse(read(data, "stix/oasis_threat-reports_poisonivy.json"), STIX)
    reports = [e for e in poison if e.report["type"] == "report" and ADVISORY not in e.report.get("extensions", {})]
    assert len(reports) == 1 and len(reports[0].objects) > 100
    myjvn = stix.parse(read(data, "stix/myjvn_np_getVulnDetailInfo_oka_JVNDB-2017-009608_jvnstix.json"), STIX)
    wrapped = myjvn[0].report
    assert any(o["type"] == "jvn-jp-sdo" for o in myjvn[0].objects)
    ids = {x.get("external_id") for x in wrapped.get("external_references", [])}
    assert {"CVE-2017-14937", "JVNDB-2017-009608"} <= ids


def test_rss_links_cves_in_title_and_text():
    body = """<?xml version="1.0" encoding="UTF-8"?>
<rdf:RDF xmlns="http://purl.org/rss/1.0/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
 xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel rdf:about="https://www.jpcert.or.jp/rss/jpcert.rdf"><title>JPCERT</title><link>https://www.jpcert.or.jp/</link>
<description>x</description></channel>
<item rdf:about="https://www.jpcert.or.jp/at/2024/at240001.html"><title>Ivanti 製品の脆弱性 (CVE-2023-46805) に関する注意喚起</title>
<link>https://www.jpcert.or.jp/at/2024/at240001.html</link><description>CVE-2024-21887 も悪用されています</description>
<dc:date>2024-01-11T12:00+09:00</dc:date></item></rdf:RDF>""".encode()
    (e,) = rss.parse(body, RSS)
    assert sorted(e.cves) == ["CVE-2023-46805", "CVE-2024-21887"]
    assert props(e.report)["dates"]["published"] == "2024-01-11T12:00:00+09:00"
    atom = b"""<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>
<entry><id>urn:x:1</id><title>MHLW notice</title><link href="https://www.mhlw.go.jp/a.html"/>
<updated>2024-05-01T09:00:00+09:00</updated></entry></feed>"""
    assert rss.parse(atom, RSS)[0].report["name"] == "MHLW notice"
    rss2 = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item><title>IPA alert</title>
<link>https://www.ipa.go.jp/x.html</link><pubDate>Tue, 10 Jun 2025 09:00:00 +0900</pubDate></item></channel></rss>"""
    assert props(rss.parse(rss2, RSS)[0].report)["dates"]["published"] == "2025-06-10T09:00:00+09:00"


XXE = b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><item>&x;</item></rdf:RDF>"""
BOMB = b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]><r>&d;</r>"""
SJIS_AS_UTF8 = ('<?xml version="1.0" encoding="UTF-8"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                "<item><title>医療機関向け注意喚起</title></item></rdf:RDF>").encode("shift_jis")
HTML = b"<!DOCTYPE html><html><head><title>Maintenance</title></head><body>down</body></html>"


@pytest.mark.parametrize("module", [jvn, rss])
@pytest.mark.parametrize(("body", "reason"), [
    (XXE, "entity"), (BOMB, "entity"), (SJIS_AS_UTF8, "charset"), (HTML, "HTML"), (b"", "empty"),
    (b"   \n", "empty"), (b"<rdf:RDF><unclosed>", "malformed"),
])
def test_hostile_xml_is_refused(module, body, reason):
    with pytest.raises(FeedError, match=reason):
        module.parse(body, JVN)


def test_correct_shift_jis_is_read():
    body = ('<?xml version="1.0" encoding="Shift_JIS"?><rdf:RDF xmlns="http://purl.org/rss/1.0/" '
            'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><item rdf:about="https://x.jp/1">'
            "<title>電子カルテの脆弱性</title><link>https://x.jp/1</link></item></rdf:RDF>").encode("shift_jis")
    assert jvn.parse(body, JVN)[0].report["name"] == "電子カルテの脆弱性"


@pytest.mark.parametrize(("module", "body", "reason"), [
    (kev, HTML, "HTML"), (kev, b"{", "malformed JSON"), (kev, b'{"vulnerabilities": 3}', "not a KEV"),
    (csaf, b'{"document": {}}', "not a CSAF"), (stix, b'{"type": "bundle"}', "not a STIX"),
])
def test_bad_json_is_refused(module, body, reason):
    with pytest.raises(FeedError, match=reason):
        module.parse(body, KEV)


def test_kev_is_read_an_entry_at_a_time_and_gives_what_a_whole_reading_gives(data):
    raw = read(data, "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json")
    items = json_list_items(raw, "the KEV catalog", "vulnerabilities")
    first = next(items)  # decoded from the text, before the rest is read
    assert first == json.loads(raw)["vulnerabilities"][0]
    assert [first, *items] == json.loads(raw)["vulnerabilities"]
    # Members around the list, spaces and a byte order mark are read as json.loads reads them.
    doc = b'\xef\xbb\xbf { "title" : "t\\ud83d\\ude00" ,\n "vulnerabilities" :\t[ {"cveID": "CVE-2024-0001"} , ' \
          b'{"cveID": "CVE-2024-0002"} ] , "count": 2 }\r\n'
    assert [e.key for e in kev.parse(doc, KEV)] == ["CVE-2024-0001", "CVE-2024-0002"]
    assert kev.parse(b'{"vulnerabilities": 5, "vulnerabilities": [{"cveID": "CVE-2024-0001"}]}', KEV)[0].key \
        == "CVE-2024-0001"  # json.loads keeps the last member of a name: so does the stream


ENTRY = b'{"cveID": "CVE-2024-0001", "vulnerabilityName": "x"}'


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"vulnerabilities": [' + ENTRY + b', {"cveID": "CVE-2024-0002", "n": NaN}]}', "NaN is not a JSON number"),
    (b'{"vulnerabilities": [' + ENTRY + b', {"cveID": "CVE-2024-0002", "n": 1e999}]}', "not a finite number"),
    (b'{"vulnerabilities": [' + ENTRY + b', {"cveID": "CVE-2024-0002", "n": "\\udc00"}]}', "lone surrogate"),
    (b'{"t\\ud800": 1, "vulnerabilities": [' + ENTRY + b']}', "lone surrogate"),
    (b'{"vulnerabilities": [' + ENTRY + b'], "t": "\\ud800"}', "lone surrogate"),
    (b'{"vulnerabilities": [' + ENTRY + b', ' + b"[" * 100000 + b"]" * 100000 + b"]}", "nested too deeply"),
    (b'{"vulnerabilities": [' + ENTRY + b' ' + ENTRY + b"]}", "Expecting ',' delimiter"),
    (b'{"vulnerabilities": [' + ENTRY + b",]}", "Expecting value"),
    (b'{"vulnerabilities": [' + ENTRY + b"]} trailing", "Extra data"),
    (b'{"vulnerabilities": [' + ENTRY + b'], "vulnerabilities": []}', "holds 'vulnerabilities' twice"),
    (b'{"vulnerabilities": [' + ENTRY + b', "\xff"]}', "not UTF-8"),
    (b'{"vulnerabilities": [' + ENTRY, "malformed JSON"),
    (b'{"title": "no list"}', "not a KEV"),
    (b"[" + ENTRY + b"]", "not a KEV"),
])
def test_a_kev_catalog_broken_after_good_entries_is_refused_whole(body, reason):
    # The stream has yielded good entries by the time it reaches the fault: the reading still fails
    # (and the ingest, one transaction, keeps nothing: tests/test_offload.py, tests/test_fetch.py).
    with pytest.raises(FeedError, match=reason):
        kev.parse(body, KEV)


def test_a_bundle_cannot_redefine_the_oasis_tlp_ids():
    green = "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"
    bundle = {"type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d", "objects": [
        {"type": "marking-definition", "spec_version": "2.1", "id": green, "created": "2022-10-01T00:00:00.000Z",
         "name": "TLP:GREEN", "definition_type": "tlp", "definition": {"tlp": "clear"}},
        {"type": "report", "spec_version": "2.1", "id": "report--84e4d88f-44ea-4bcd-bbf3-b2c1c320bcb3",
         "created": "2026-11-01T00:00:00.000Z", "modified": "2026-11-01T00:00:00.000Z", "name": "x",
         "published": "2026-11-01T00:00:00.000Z", "object_refs": [green], "object_marking_refs": [green]}]}
    (e,) = stix.parse(json.dumps(bundle).encode(), STIX)
    assert e.tlp == "GREEN"
