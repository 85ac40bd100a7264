"""The sandbox daemon: one per build, living in the build's user + mount + pid namespace.

It does everything that must see container ids or needs mount privileges: unpacking
layers into snapshots, mounting overlays, running the OCI runtime, diffing upper dirs,
and removing snapshot trees owned by sub-ids. Started by `spawn.DaemonProcess`
(`python -m pybuild.builder.executor.daemon`); speaks the JSON-lines protocol of
`executor.protocol` on stdin/stdout. When pybuild dies the daemon dies (PDEATHSIG), and
being pid 1 of its pid namespace, every container process dies with it; its mounts
vanish with the namespace.

Modules: `server` (the `Daemon` object and its dispatch table), `namespaces` (entering
them), `linux` (libc), `step` (a RUN step), `mountpoints`, `cachemounts`, `runtime` (the
OCI runtime), `layers` (apply, commit), `fileop`, `rootfs` (the step's root from the
snapshotter).

Keep imports light: this package starts once per build.
"""
