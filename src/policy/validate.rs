//! Semantic checks the schema cannot express (min <= max, unique names, ...).
