"""The plaza command: the composition root that wires Plaza's services together."""
