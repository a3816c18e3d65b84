"""steerlang.dictionary."""
