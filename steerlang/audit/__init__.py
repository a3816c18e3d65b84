"""steerlang.audit."""
