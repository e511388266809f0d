"""Command-line tools.  Top of the layering: may import anything below."""
