"""The built-in tutoring record types: one module each, with its table, rules and derive."""
