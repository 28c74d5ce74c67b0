"""SGLang's vocabulary: flag values and its --help catalog, flag types, failure classes, feasibility before launch, KV
capacity."""
