"""The `vectis` command: thin shells that parse, call one core function, and render."""
