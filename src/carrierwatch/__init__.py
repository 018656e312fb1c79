"""carrierwatch: SLA monitoring for last-mile delivery partners."""

__version__ = "0.1.0"
