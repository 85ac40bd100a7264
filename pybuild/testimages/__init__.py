"""Small deterministic images for tests and demos, made from distribution packages."""
