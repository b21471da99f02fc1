"""`bandlift export`, named after the command as in bandlift.rt.cli."""
