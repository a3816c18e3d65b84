"""steerlang.lang."""
