"""Placeholder: this module is being written; it registers no model yet."""
