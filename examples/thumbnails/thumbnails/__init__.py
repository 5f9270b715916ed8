"""The thumbnails example: a handler for `rediswq worker` (see ../README.md)."""
