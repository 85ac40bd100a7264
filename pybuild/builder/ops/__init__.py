"""pybuild.builder.ops"""
