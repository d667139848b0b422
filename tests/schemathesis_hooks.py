"""schemathesis hooks for tests/openapi.rs.

A statement from the fuzzer's SQL dictionary (the dashboard's queries, the bot's writes) is
refused at once when its parameter list has another length than its `?`s, and random lists
almost always do. For a case meant to be valid (positive), the list is cut or padded to the
statement's count, keeping the generated values, so the statement runs against real rows.
Negative cases are left as they are: changing them could make them valid.
"""

import schemathesis
from schemathesis.generation import GenerationMode


@schemathesis.hook
def map_case(context, case):
    body = case.body
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return case
    if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
        return case
    wanted = body["sql"].count("?")
    guild = (case.path_parameters or {}).get("guild_id") or "1"
    for key in ("parameters", "params"):
        values = body.get(key)
        if isinstance(values, list):
            body[key] = (values + [guild] * wanted)[:wanted]
    return case
