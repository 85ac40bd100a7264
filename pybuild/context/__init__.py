"""pybuild.context: the build context (moby/patternmatcher's and tonistiigi/fsutil's role).

`patterns` (.dockerignore matching, COPY wildcards), `dockerignore` (which ignore file
applies), `resolve` (the one symlink-safe path resolver), `tree` (selecting what a COPY
reads and its content digest), `statcache` (digests remembered per context root),
`layer` (a COPY written straight into a layer). Nothing is imported here: the sandbox
daemon imports `resolve` and `patterns` on its start-up path.
"""
