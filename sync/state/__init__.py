"""The four tables of DESIGN.md, each behind a small store class."""
