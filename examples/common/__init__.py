"""Helpers shared by the example pipelines: command line, runtime, retries, live progress."""
