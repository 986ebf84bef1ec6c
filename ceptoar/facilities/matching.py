"""Which advisories touch which facility's systems: the products an advisory names (CPEs, CSAF
product trees with version ranges, JVN's affected products with their versions in Japanese, KEV's
vendor and product) against the rows of a facility's register (台帳).

Names are compared as keys: Unicode NFKC (full-width made half-width), case folded, spaces and
punctuation dropped, the vendor's own name dropped from the front of a product name ("Philips Vue
PACS" by Philips is "vuepacs"), and vendor names mapped through the alias list
(`feeds/vendor_aliases.toml`: フォーティネット is Fortinet). A match has a confidence:

- `version`: vendor and product agree and the installed version lies in an affected range;
- `product`: vendor and product agree, the version is unknown on one side;
- `name`: the product agrees but the vendor is unknown or not the same.

A version outside every affected range is not a match.

Package URLs (a register row's `purl`, a CSAF product's identification helper) are parsed with
packageurl-python and compared as the purl specification says (type, namespace and name, each
normalized for its type; qualifiers and subpath do not name another package). Where the scheme of
the versions is known (the purl's type, or a `vers:` range's), versions are compared by univers
with that ecosystem's rules (npm's semver, PyPI's PEP 440, Debian's, Maven's…); elsewhere by the
generic rules below (JVN's Japanese wording, dotted versions).
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from functools import cache, lru_cache

from packageurl import PackageURL
from univers.version_range import RANGE_CLASS_BY_SCHEMES, VersionRange

from ceptoar.core import extensions
from ceptoar.core.paths import project_file

CONFIDENCE = ("version", "product", "name")
CONFIDENCE_JA = {"version": "お使いの版が影響を受ける範囲にあります", "product": "同じ製品をお使いです(版は未確認)",
                 "name": "製品名が一致しています(製造元は未確認)"}
_DROP = re.compile(r"[\s\-_.,/()（）・:：'\"®™]+")
_CORP = re.compile(r"(株式会社|有限会社|\(株\)|inc|corporation|corp|co\.?,?ltd|ltd|llc|gmbh|ag|plc|company)$")


@cache
def aliases() -> dict[str, str]:
    """alias key → canonical vendor key, from feeds/vendor_aliases.toml."""
    path = project_file("feeds/vendor_aliases.toml")
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    out = {}
    for canonical, names in tomllib.loads(text).get("vendors", {}).items():
        c = _key(canonical)
        out[c] = c
        for n in names:
            out[_key(n)] = c
    return out


@lru_cache(maxsize=65536)
def _key(text: str | None) -> str:
    t = unicodedata.normalize("NFKC", text or "").casefold()
    return _DROP.sub("", t)


@lru_cache(maxsize=65536)
def vendor_key(text: str | None) -> str:
    k = _key(text)
    k = aliases().get(k, k)
    stripped = _CORP.sub("", k)
    return aliases().get(stripped, stripped)


@lru_cache(maxsize=65536)
def product_key(product: str | None, vendor: str | None = None) -> str:
    """The product's key, without its vendor's name in front."""
    k = _key(product)
    for v in {_key(vendor), vendor_key(vendor)}:
        if v and k.startswith(v) and len(k) > len(v):
            k = k[len(v):]
    return k


@lru_cache(maxsize=65536)
def cpe_parts(cpe: str | None) -> tuple[str, str, str] | None:
    """(vendor, product, version) of a CPE 2.2 URI or 2.3 formatted string."""
    if not cpe:
        return None
    c = cpe.strip().lower()
    if c.startswith("cpe:2.3:"):
        parts = c.split(":")
        if len(parts) < 6:
            return None
        vendor, product, version = parts[3], parts[4], parts[5]
    elif c.startswith("cpe:/"):
        parts = c[5:].split(":")
        if len(parts) < 3:
            return None
        vendor, product = parts[1], parts[2]
        version = parts[3] if len(parts) > 3 else ""
    else:
        return None
    version = "" if version in ("*", "-", "") else version
    return vendor.replace("\\", ""), product.replace("\\", ""), version


# --- versions -------------------------------------------------------------------------------------

@lru_cache(maxsize=65536)
def version_tuple(text: str) -> tuple:
    """Comparable form of a version: numbers as numbers, words as words ("2023.3_Build_9342")."""
    out = []
    for tok in re.findall(r"\d+|[a-z]+", unicodedata.normalize("NFKC", text).lower()):
        out.append((0, int(tok), "") if tok.isdigit() else (1, 0, tok))
    return tuple(out)


_OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
        "=": lambda a, b: a == b}
_JA_RANGE = [  # JVN's wording: "3.4.6 より前のバージョン", "5.16.3 未満", "v6 R4 およびそれ以前", "2.0 以降"
    (re.compile(r"^(.+?)\s*(?:より前|未満)"), "<"),
    (re.compile(r"^(.+?)\s*(?:およびそれ以前|及びそれ以前|以前|以下)"), "<="),
    (re.compile(r"^(.+?)\s*(?:以降|以上)"), ">="),
]


def parse_range(text: str | None) -> list[tuple[str, str]] | None:
    """Constraints [(op, version)] from a CSAF range ("<12.2.8.410", "<= 7.2.8.810", "vers:generic/
    >=1.0|<2.0"), a version list ("MMT-1715 | MMT-1754") or JVN's Japanese wording; None when the
    text says nothing usable about versions."""
    if not text:
        return None
    t = unicodedata.normalize("NFKC", text).strip()
    if t.lower().startswith("vers:"):
        t = t.split("/", 1)[-1]
    for pattern, op in _JA_RANGE:
        m = pattern.match(t)
        if m:
            v = m.group(1).strip()
            return [(op, v)] if version_tuple(v) else None
    out = []
    for part in re.split(r"\s*\|\s*|\s*,\s*", t):
        m = re.fullmatch(r"(<=|>=|<|>|=)?\s*(.+)", part.strip())
        if m and version_tuple(m.group(2)):
            out.append((m.group(1) or "=", m.group(2).strip()))
    return out or None


@lru_cache(maxsize=65536)
def purl_parts(text: str | None) -> tuple[str, str, str, str] | None:
    """(type, namespace, name, version) of a package URL, normalized as its type says; None when it
    is not one. Qualifiers and subpath are left out: they do not name another package."""
    if not text or not text.startswith("pkg:"):
        return None
    try:
        p = PackageURL.from_string(text)
    except ValueError:
        return None
    return p.type.lower(), p.namespace or "", p.name, p.version or ""


def purl_error(text: str) -> str | None:
    """Why `text` is not a package URL (packageurl-python's reason), or None when it is one."""
    try:
        PackageURL.from_string(text)
    except ValueError as e:
        return " ".join(str(e).split())[:120]
    return None


def scheme_of(text: str | None) -> str | None:
    """The versioning scheme univers knows for a `vers:` range or a purl type, else None."""
    if not text:
        return None
    t = text.strip().lower()
    scheme = t[5:].split("/", 1)[0] if t.startswith("vers:") else purl_parts(text)[0] if purl_parts(text) else t
    return scheme if scheme in RANGE_CLASS_BY_SCHEMES and scheme not in ("generic", "none", "all") else None


def in_scheme_range(version: str, constraints: list[tuple[str, str]], scheme: str) -> bool | None:
    """`in_range` by the rules of one ecosystem (univers); None when a version there is not one of
    that scheme (the generic rules decide)."""
    try:
        vers = "|".join(f"{'' if op == '=' else op}{v}" for op, v in constraints)
        return RANGE_CLASS_BY_SCHEMES[scheme].version_class(version) in VersionRange.from_string(
            f"vers:{scheme}/{vers}")
    except Exception:  # univers raises its own and third-party exceptions for what its scheme does not read
        return None


def in_range(version: str, constraints: list[tuple[str, str]], scheme: str | None = None) -> bool:
    """Whether `version` satisfies the constraints: '=' ones are alternatives; the others all hold.
    With a `scheme` univers knows, by that ecosystem's rules."""
    if scheme:
        held = in_scheme_range(version, constraints, scheme)
        if held is not None:
            return held
    v = version_tuple(version)
    exact = [c for c in constraints if c[0] == "="]
    bounds = [c for c in constraints if c[0] != "="]
    if exact and any(v == version_tuple(x) for _op, x in exact):
        return True
    if bounds:
        return all(_OPS[op](v, version_tuple(x)) for op, x in bounds)
    return False


# --- what an advisory names ---------------------------------------------------------------------

@dataclass
class Affected:
    vendor: str | None
    product: str
    ranges: list[tuple[str, str]] | None = None  # None: versions unknown
    via: str = "name"  # cpe | csaf | jvn | kev
    purl: str | None = None  # the product's package URL (CSAF)
    scheme: str | None = None  # how its versions compare (univers), from its purl or a `vers:` range
    vendor_k: str = field(init=False)
    product_k: str = field(init=False)

    def __post_init__(self):
        self.vendor_k = vendor_key(self.vendor)
        self.product_k = product_key(self.product, self.vendor)
        self.ranges = [tuple(r) for r in self.ranges] if self.ranges else None

    def as_dict(self) -> dict:
        return {"vendor": self.vendor, "product": self.product, "ranges": self.ranges, "via": self.via,
                "purl": self.purl, "scheme": self.scheme}

    @classmethod
    def from_dict(cls, d: dict) -> Affected:
        return cls(d.get("vendor"), d["product"], d.get("ranges"), d.get("via", "name"), d.get("purl"),
                   d.get("scheme"))


def affected_of(report: dict) -> list[Affected]:
    """The products a (published) report names, from every kind of source."""
    out: list[Affected] = []
    ext = extensions.props(report)
    kev = extensions.typed(ext, "kev", dict) or {}
    if isinstance(kev.get("product"), str):
        out.append(Affected(kev.get("vendor_project"), kev["product"], None, "kev"))
    csaf = extensions.typed(ext, "csaf", dict) or {}
    for p in csaf.get("affected") or []:
        if isinstance(p, dict) and isinstance(p.get("product"), str):
            ranges = parse_range(p.get("range")) if isinstance(p.get("range"), str) else None
            purl = p.get("purl") if purl_parts(p.get("purl") if isinstance(p.get("purl"), str) else None) else None
            if purl and not ranges and purl_parts(purl)[3]:
                ranges = [("=", purl_parts(purl)[3])]  # a purl with a version names that version alone
            scheme = scheme_of(p.get("range") if isinstance(p.get("range"), str) else None) or scheme_of(purl)
            out.append(Affected(p.get("vendor"), p["product"], ranges, "csaf", purl, scheme))
    for p in extensions.typed(ext, "products", list) or []:
        if not isinstance(p, dict):
            continue
        parts = cpe_parts(p.get("cpe"))
        versions = [v for v in p.get("versions") or [] if isinstance(v, str)]
        ranges = [c for v in versions for c in (parse_range(v) or [])] or None
        if parts:
            out.append(Affected(parts[0], parts[1], ranges, "cpe"))
        if isinstance(p.get("product"), str) and p["product"]:
            out.append(Affected(p.get("vendor"), p["product"], ranges, "jvn"))
    described = {(a.vendor, a.product) for a in out if a.via == "cpe"}  # with JVN's affected versions
    for cpe in extensions.typed(ext, "cpes", list) or []:
        parts = cpe_parts(cpe) if isinstance(cpe, str) else None
        if parts and (parts[0], parts[1]) not in described:
            out.append(Affected(parts[0], parts[1], [("=", parts[2])] if parts[2] else None, "cpe"))
    seen, unique = set(), []
    for a in out:
        key = (a.vendor_k, a.product_k, tuple(a.ranges or ()), a.via, a.purl)
        if a.product_k and key not in seen:
            seen.add(key)
            unique.append(a)
    return unique


def match_row(row: dict, affected: list[Affected]) -> tuple[str, list[str]] | None:
    """The best (confidence, reasons) of one register row against an advisory's products, or None."""
    best = None
    row_cpe = cpe_parts(row.get("cpe"))
    names = [row.get("product") or ""] + [a for a in (row.get("aliases") or "").split("|") if a.strip()]
    row_vendor = vendor_key(row.get("vendor"))
    row_products = {product_key(n, row.get("vendor")) for n in names} - {""}
    row_purl = purl_parts(row.get("purl"))
    version = (row.get("version") or "").strip() or (row_cpe[2] if row_cpe else "") or (row_purl[3] if row_purl else "")
    for a in affected:
        reasons = []
        theirs = purl_parts(a.purl)
        if row_purl and theirs and row_purl[:3] == theirs[:3]:
            vendor_ok, product_ok = True, True
            reasons.append(f"purl pkg:{theirs[0]}/{theirs[1] + '/' if theirs[1] else ''}{theirs[2]}")
        elif row_purl and theirs:
            continue  # two package URLs that name different packages: not the same product
        elif a.via == "cpe" and row_cpe and _key(row_cpe[0]) == _key(a.vendor) and _key(row_cpe[1]) == _key(a.product):
            vendor_ok, product_ok = True, True
            reasons.append(f"CPE {row_cpe[0]}:{row_cpe[1]}")
        else:
            product_ok = a.product_k in row_products
            vendor_ok = bool(a.vendor_k) and a.vendor_k == row_vendor
            if product_ok:
                reasons.append(f"製品名 {a.product}" + (f" ({a.vendor})" if a.vendor else ""))
        if not product_ok:
            continue
        if a.ranges and version:
            if not in_range(version, a.ranges, a.scheme or (row_purl[0] if row_purl and theirs else None)):
                continue  # another version: not affected
            reasons.append(f"版 {version} が影響範囲 {' '.join(op + v for op, v in a.ranges)} にあります")
            confidence = "version" if vendor_ok else "name"
        else:
            confidence = "product" if vendor_ok else "name"
        if not vendor_ok:
            reasons.append("製造元が一致しないか未記入")
        rank = CONFIDENCE.index(confidence)
        if best is None or rank < CONFIDENCE.index(best[0]):
            best = (confidence, reasons)
    return best
