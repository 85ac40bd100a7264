"""Supply-chain attestations: SBOMs, SLSA provenance, attestation manifests."""
