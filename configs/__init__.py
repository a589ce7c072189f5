"""The packaged YAML configurations (package data, found with importlib.resources)."""
