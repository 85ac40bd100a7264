"""pybuild.builder.executor"""
