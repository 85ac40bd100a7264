"""Native SBOM scanning: package databases of a filesystem, as SPDX or CycloneDX."""
