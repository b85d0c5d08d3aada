"""Adapters that store the join's outputs: the settlement database and ClickHouse."""
