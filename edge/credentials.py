"""Credentials out of text before it is shown, logged, audited or sent: one rule for the whole unit.

Stream URLs carry passwords (rtsp://admin:pw@cam/...), and they turn up in source labels, error
messages, tracebacks and config errors. A leaf module (standard library only), so that sources,
capture, config and daemon all use it without depending on one another.
"""

from __future__ import annotations

import re

# scheme:, scheme:// or scheme// (a typo'd or half-written URL is exactly the one that gets echoed
# in an error), then everything up to the *last* '@' of the word: a password may hold '/', '#', '?'
# or '@' unencoded, which URL parsing reads as path, fragment or query and leaves in the text.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*(?::/{0,2}|//))[^\s@]*(?:@[^\s@]*)*@")
# credentials in a query string, as some cameras take them (videostream.cgi?user=admin&pwd=...)
_QUERY_SECRET = re.compile(r"([?&;](?:user(?:name)?|login|pass(?:word|wd)?|pwd|token|access_token|auth|key|apikey|"
                           r"api_key|secret|sig(?:nature)?)=)[^&;#\s]*", re.IGNORECASE)


def mask_credentials(text: str) -> str:
    """`text` (a URL, an error message, a traceback) with the credentials of any URL in it masked:
    rtsp://admin:pw@cam/1 -> rtsp://***@cam/1, ...?user=admin&pwd=x -> ...?user=***&pwd=***.

    Deliberately not built on URL parsing: a password with '/', '#', '?' or '@' in it, a bad port or
    a missing '//' makes urlsplit() see no user:password at all (or raise), and the secret went out
    whole. The user name is hidden too: it may be a token. A plain address (ops@example.org) is no URL
    and stays."""
    return _QUERY_SECRET.sub(r"\1***", _USERINFO.sub(r"\1***@", text))
