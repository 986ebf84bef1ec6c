"""CVSS scores as the sources state them, checked against their vectors with the `cvss` library
(FIRST's v2.0, v3.x and v4.0 specifications).

A source states a version, a score and a vector; each may be missing or wrong. What the hub keeps:
the stated score when there is one (a score that disagrees with the one its vector computes is kept
as stated, with a warning: the source's word, not ours), else the computed one; the vector only when
it parses (an invalid vector is dropped with a warning, never failing its source); the version from
the vector's own prefix when the source gives none; the severity as stated, else as the
specification names the score's band.
"""

from __future__ import annotations

from cvss import CVSS2, CVSS3, CVSS4, CVSSError

from ceptoar.normalize import score

_CLASSES = {"2": CVSS2, "3": CVSS3, "4": CVSS4}
_PREFIXED = {"3", "4"}  # versions whose vectors begin "CVSS:x.y/"
TOLERANCE = 0.05  # scores are stated to one decimal


def version_of(version, vector: str | None) -> str | None:
    """The CVSS version: the vector's own prefix ('CVSS:4.0/…') stands over a stated one."""
    if vector and vector.startswith("CVSS:"):
        return vector[5:].split("/", 1)[0] or None
    if isinstance(version, (int, float)) and not isinstance(version, bool):
        version = f"{float(version):.1f}"
    return version.strip() if isinstance(version, str) and version.strip() else None


def _computed(major: str, vector: str) -> tuple[float, str | None, str]:
    """(base score, its severity, the vector as the specification orders it), or CVSSError."""
    if major == "4":
        c = CVSS4(vector)
        return float(c.base_score), c.severity, c.clean_vector()
    if major == "3":
        c = CVSS3(vector)
        return float(c.scores()[0]), c.severities()[0], c.clean_vector()
    c = CVSS2(vector)
    return float(c.scores()[0]), None, c.clean_vector()


def checked(version, stated, vector, where: str, warnings: list[str], **extra) -> dict | None:
    """One CVSS entry {version, score, severity, vector, **extra}, or None when it has no usable
    score (a warning says why). `stated`: the source's score, as it came."""
    vector = vector.strip() if isinstance(vector, str) and vector.strip() else None
    version = version_of(version, vector)
    value = score(stated, where, warnings)
    major = (version or "").split(".")[0]
    severity = extra.pop("severity", None)
    if vector and major in _CLASSES:
        if major in _PREFIXED and not vector.startswith("CVSS:"):
            vector = f"CVSS:{version}/{vector}"
        try:
            computed = _computed(major, vector)[0]  # the vector itself is kept as the source wrote it
        except (CVSSError, ValueError, KeyError, IndexError) as e:
            reason = " ".join(str(e).split())[:120] or type(e).__name__
            warnings.append(f"{where}: CVSS {version} vector {vector[:100]!r} is not valid ({reason}): "
                            + ("the stated score kept, the vector dropped" if value is not None else "dropped"))
            vector, computed = None, None
        if computed is not None:
            if value is None:
                value = computed
            elif abs(value - computed) > TOLERANCE:
                warnings.append(f"{where}: CVSS {version} score {value:g} stated, {computed:g} computed from its "
                                "vector: kept as stated")
    elif vector and major not in _CLASSES:
        warnings.append(f"{where}: CVSS vector {vector[:100]!r} of unknown version {version!r}: vector dropped")
        vector = None
    if value is None:
        return None
    if severity is None and major in _PREFIXED:
        severity = band_of(value)
    return {"version": version, "score": value, "severity": severity.capitalize() if isinstance(severity, str)
            and severity else None, "vector": vector, **extra}


def band_of(value: float) -> str:
    """The qualitative severity of a v3/v4 score (the same bands in both specifications)."""
    return "Critical" if value >= 9 else "High" if value >= 7 else "Medium" if value >= 4 else \
        "Low" if value > 0 else "None"
