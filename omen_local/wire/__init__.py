"""Pure mappings between API vocabularies that more than one module translates."""
