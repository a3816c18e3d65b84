"""steerlang.world."""
