"""CEPTOAR hub: ingest security advisories, normalize them to STIX 2.1, triage and share them."""

__version__ = "0.1.0"
USER_AGENT = f"ceptoar-hub/{__version__} (+https://www.med.or.jp/ medical CEPTOAR)"
