"""MQTT topic templates for hits: which fields they may use, and how a match fills them.

Kept apart from the hit messages so that list definitions (edge.lists.model, on the central side
too) can refuse a bad template when a list is defined, not when its first hit is sent.
"""

from __future__ import annotations

import re
import string

from edge.types import ListMatch

TOPIC_FIELDS = ("device", "camera", "list", "agency", "priority")
_TOPIC_VALUE_BAD = re.compile(r"[^A-Za-z0-9._-]")


class TopicTemplateError(ValueError):
    """A topic template names an unknown field or contains MQTT wildcards."""


def check_topic_template(template: str) -> str:
    """Validate a topic template; returns it unchanged or raises TopicTemplateError naming the problem."""
    if not template:
        raise TopicTemplateError("topic template is empty")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise TopicTemplateError(f"topic template {template!r} is malformed: {e}") from None
    unknown = sorted({f for f in fields if f not in TOPIC_FIELDS})
    if unknown:
        raise TopicTemplateError(
            f"topic template {template!r} uses unknown field(s) {unknown}; allowed: {list(TOPIC_FIELDS)}")
    literal = string.Formatter().vformat(template, (), {f: "x" for f in TOPIC_FIELDS})
    if "+" in literal or "#" in literal:
        raise TopicTemplateError(f"topic template {template!r} contains an MQTT wildcard (+ or #)")
    if literal.startswith("$"):
        raise TopicTemplateError(f"topic template {template!r} must not start with '$' (reserved topics)")
    return template


def _topic_value(value: object) -> str:
    """Make a value safe as (part of) one topic level: no '/', no wildcards, never empty."""
    return _TOPIC_VALUE_BAD.sub("_", str(value)) or "_"


def render_topic(template: str, *, device: str, camera: str, match: ListMatch) -> str:
    """Fill a topic template for one list match."""
    check_topic_template(template)
    return template.format(device=_topic_value(device), camera=_topic_value(camera),
                           list=_topic_value(match.list_id), agency=_topic_value(match.agency),
                           priority=_topic_value(match.priority))
