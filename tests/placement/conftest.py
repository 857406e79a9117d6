"""Placement tests use the shared ``sim_cluster`` fixture of tests/conftest.py."""
