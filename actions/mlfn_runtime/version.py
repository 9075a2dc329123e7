"""The runtime's version (reported by OIP v2 server metadata)."""
VERSION = "0.1.0"
