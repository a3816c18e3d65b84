"""steerlang.runtime."""
