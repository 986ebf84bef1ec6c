"""Fetching: HTTP with conditional GET and hard limits (and later TAXII pulls). Bytes in, bytes out."""
