"""serving package (see shared/DESIGN.md)."""
