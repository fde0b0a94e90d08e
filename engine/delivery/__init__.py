"""Delivery: the dispatcher, workers, wire protocol, sources, sinks, metering and CURVE."""
