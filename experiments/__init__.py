"""Command-line scripts (absl flags); each calls one library function."""
