"""Fetching: HTTP with conditional GET and hard limits, ROLIE indexes followed to their documents,
TAXII pulls. Bytes in, bytes out: parsing is the normalizers' (ceptoar.normalize), which do no I/O.
The kinds of source and the normalizer of each are ceptoar.normalize.kinds'.
"""
