"""Typed Dockerfile instructions: `types` (frozen values), `parse` (AST node -> value),
`flags` (BuildKit's bflag), `runmount` (`RUN --mount` options), `loc` (locations)."""
