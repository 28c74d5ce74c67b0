"""What the user writes: the run file, the search space, references, the strict schema base and YAML."""
