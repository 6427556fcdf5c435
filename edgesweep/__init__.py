"""edgesweep."""
