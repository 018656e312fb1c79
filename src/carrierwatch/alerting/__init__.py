"""On-call alerting: SLO specifications from partner contracts, burn-rate math, Prometheus
recording and alerting rules, and the ``carrierwatch alerts`` commands (see docs/alerting.md).

:mod:`carrierwatch.alerting.burnrate` is pure; :mod:`carrierwatch.alerting.spec` reads partner
files; :mod:`carrierwatch.alerting.rules` turns specifications into rule files.
"""
