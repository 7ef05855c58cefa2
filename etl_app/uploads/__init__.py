"""Uploaded files: formats, rows and the payloads of flat formats."""
