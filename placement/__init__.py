"""placement package (see shared/DESIGN.md)."""
