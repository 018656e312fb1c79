"""Test support for the dashboards: the ClickHouse plugin's macro expansion and Grafana's
variable interpolation, written from their documentation (see docs/dashboards.md).

Grafana interpolates template variables first (``${var}``, ``$var``, ``${var:singlequote}``,
``$__rate_interval``); the ClickHouse data source plugin then expands its macros:

==============================  ===============================================================
macro                           expansion (``F``/``T``: the range's ends in epoch seconds)
==============================  ===============================================================
``$__timeFilter(c)``            ``c >= toDateTime(F) AND c <= toDateTime(T)``
``$__timeFilter_ms(c)``         ``c >= fromUnixTimestamp64Milli(Fms) AND c <= …(Tms)``
``$__dateFilter(c)``            ``c >= toDate(F) AND c <= toDate(T)``
``$__fromTime`` / ``$__toTime``  ``toDateTime(F)`` / ``toDateTime(T)``
``$__fromTime_ms``              ``fromUnixTimestamp64Milli(Fms)`` (``$__toTime_ms`` alike)
``$__timeInterval(c)``          ``toStartOfInterval(toDateTime(c), INTERVAL I second)``
``$__interval_s``               ``I`` (the panel's interval in seconds)
==============================  ===============================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["expand_sql", "interpolate"]

_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def interpolate(text: str, variables: Mapping[str, str | Sequence[str]]) -> str:
    """Grafana's template variable interpolation (``raw``/default: values joined by commas;
    ``singlequote``: each value quoted, joined by commas). Grafana's global ``$__`` names
    are left for the caller, unknown variables raise ``KeyError``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        fmt = match.group(2)
        if name.startswith("__"):
            return match.group(0)
        value = variables[name]
        values = [value] if isinstance(value, str) else list(value)
        if fmt == "singlequote":
            return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
        if fmt not in (None, "raw", "csv"):
            raise ValueError(f"format {fmt!r} not supported here")
        return ",".join(values)

    return _VARIABLE.sub(replace, text)


def expand_sql(sql: str, from_ms: int, to_ms: int, interval_s: int,
               variables: Mapping[str, str | Sequence[str]]) -> str:
    """The SQL the ClickHouse plugin sends for a panel over ``[from_ms, to_ms]``."""
    sql = interpolate(sql, variables)
    f, t = from_ms // 1000, to_ms // 1000

    def call(name: str, template: str) -> None:
        nonlocal sql
        sql = re.sub(r"\$__" + name + r"\(([^()]+)\)",
                     lambda m: template.format(c=m.group(1).strip()), sql)

    call("timeFilter_ms", f"{{c}} >= fromUnixTimestamp64Milli({from_ms}) AND {{c}} <= "
                          f"fromUnixTimestamp64Milli({to_ms})")
    call("timeFilter", f"{{c}} >= toDateTime({f}) AND {{c}} <= toDateTime({t})")
    call("dateFilter", f"{{c}} >= toDate({f}) AND {{c}} <= toDate({t})")
    call("timeInterval", f"toStartOfInterval(toDateTime({{c}}), INTERVAL {interval_s} second)")
    for macro, value in (("$__fromTime_ms", f"fromUnixTimestamp64Milli({from_ms})"),
                         ("$__toTime_ms", f"fromUnixTimestamp64Milli({to_ms})"),
                         ("$__fromTime", f"toDateTime({f})"), ("$__toTime", f"toDateTime({t})"),
                         ("$__interval_s", str(interval_s))):
        sql = sql.replace(macro, value)
    if "$" in sql:
        raise AssertionError(f"unexpanded macro or variable left in:\n{sql}")
    return sql
