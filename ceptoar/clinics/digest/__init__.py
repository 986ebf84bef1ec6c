"""Digests and flash alerts for clinics by e-mail: subscribers, rendering once per segment,
SMTP delivery with a resumable delivery log."""
