"""Reference lists of wanted vehicles: keyed hashes only, sealed (encrypted + signed) packages,
deltas, the device-side store with atomic swap, the matcher, MQTT sync and the central CLI.

See docs/security.md for the threat model and key handling.
"""
