"""Escalation decision tables: pure tables and evaluator (``table``, ``unary``, ``facts``), the
stream/replay hook (``hook``), delivery of escalations (``dispatch``) and manual takeover."""
