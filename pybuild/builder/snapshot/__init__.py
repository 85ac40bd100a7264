"""pybuild.builder.snapshot"""
